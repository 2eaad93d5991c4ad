"""Training recipes and the trainer behind ``edgefa train``."""

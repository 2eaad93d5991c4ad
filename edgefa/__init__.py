"""edgefa: 3D face alignment models from training to device files."""
__version__ = "0.1.0"

"""The app layer: the ``edgefa`` command line, the pipeline (train -> compress -> export -> bench ->
report) and the compression recipes that chain training, quantization and export. Everything
below it (``edgefa`` core, ``training``, ``quantization``, ``converters``) is a library that never
imports this package."""

"""Running exported files (ONNX, TFLite, CoreML): the format table, one runner per runtime, and
``ArtifactPredictor``, which feeds and reads a file from its own metadata. Needs only the runtimes
and numpy, never torch or the converters (``pip install edgefa[runtime]``)."""

"""Device-file exporters: one module per format, one format table (``edgefa.runtime.formats``)."""

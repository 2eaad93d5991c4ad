"""Device-file exporters: one module per format, one format table (``converters.formats``)."""

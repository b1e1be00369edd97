"""assay.tracing."""

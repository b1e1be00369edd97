"""assay.integrity."""

"""assay.incident."""

"""assay.integrations."""

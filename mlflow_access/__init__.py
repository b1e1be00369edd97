"""assay.mlflow_access."""

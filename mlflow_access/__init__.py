"""assay's one door to MLflow: the :class:`MlflowBackend` protocol (``base``), MLflow in process
(``embedded``), a running server over REST (``rest``, never imports mlflow), MLflow's SQLite
registry read directly (``sqlite_reader``) and a version's real artifact files (``artifacts``).
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "MLFLOW_ADDED_FILES": "assay.mlflow_access.base",
    "MlflowBackend": "assay.mlflow_access.base",
    "ModelVersionInfo": "assay.mlflow_access.base",
    "open_backend": "assay.mlflow_access.base",
    "EmbeddedBackend": "assay.mlflow_access.embedded",
    "RestBackend": "assay.mlflow_access.rest",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

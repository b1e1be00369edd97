"""Where assay meets MLflow users: the ``models:`` artifact-repository plugin, ``load_model``, and the
guard inside ``mlflow server --app-name assay-guard``.
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "load_model": "assay.integrations.loading",
    "VerifyingModelsArtifactRepository": "assay.integrations.mlflow_plugin",
    "Guard": "assay.integrations.guard",
    "create_app": "assay.integrations.mlflow_guard",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

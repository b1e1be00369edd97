"""Verify before load, explicitly: ``assay.registry.load_model("models:/churn@production")``.

The version's files are downloaded once into a private folder, verified there against the bundle
and registration statement assay recorded (every file re-hashed, missing and extra files
reported), and only then loaded by ``mlflow.pyfunc.load_model`` from that same folder, so the
bytes that were checked are the bytes that load. Unlike the ``models:`` plugin, which lets models
assay never registered through with a warning and obeys ``ASSAY_ENFORCE``, this call always
enforces and refuses unregistered versions: whoever calls it asked for a verified model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import AssayError

if TYPE_CHECKING:
    from assay.registry.facade import Registry

__all__ = ["load_model"]


def load_model(
    uri: str,
    *,
    registry: Registry | None = None,
    dst_path: str | Path | None = None,
    **pyfunc_kwargs: Any,
) -> Any:
    """Verify ``models:/NAME/V`` or ``models:/NAME@ALIAS``, then load it with MLflow pyfunc.

    ``dst_path`` (an empty or absent folder) keeps the verified files; by default they go to a
    new temporary folder that outlives the call, as MLflow's own downloads do (a loaded model may
    read its files lazily). Raises ``NotFoundError`` for a version assay never registered and
    ``IntegrityError`` (exit code 3) when any file differs; nothing is loaded then.
    """
    from assay.core.settings import Settings
    from assay.registry.facade import Registry
    from assay.registry.uri_verify import resolve_model_version, verify_local_copy

    registry = registry or Registry.open(Settings.from_env())
    name, version = resolve_model_version(registry, uri)
    if dst_path is None:
        root = Path(tempfile.mkdtemp(prefix="assay-load-"))
    else:
        root = Path(dst_path)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise AssayError(f"{root} must be an empty folder or not exist yet")
    local = registry.backend.download_version(name, version, root / "model")
    verify_local_copy(registry, name, version, local).raise_for_failure()

    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(local), **pyfunc_kwargs)

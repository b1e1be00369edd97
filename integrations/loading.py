"""Verify before load, explicitly: ``assay.registry.load_model("models:/churn@production")``.

The version's files are downloaded once into a private folder, verified there against the bundle
and registration statement assay recorded (every file re-hashed, missing and extra files
reported), and only then loaded by ``mlflow.pyfunc.load_model`` from that same folder, so the
bytes that were checked are the bytes that load. It applies the enforcement decision
(``assay.registry.enforcement``: trusted signer, state, pending, protected aliases) and, unlike the
``models:`` plugin, ignores ``ASSAY_ENFORCE``: whoever calls it asked for a verified model.
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
    read its files lazily). Raises ``IntegrityError`` (exit code 3) naming the reason when the
    decision refuses (tampered bytes, unsigned, pending, quarantined, compromised, not known-good
    behind a protected alias); nothing is loaded then and the downloaded files are removed.
    """
    from assay.core.refs import parse_model_ref
    from assay.core.settings import Settings
    from assay.registry.enforcement import decide
    from assay.registry.facade import Registry
    from assay.registry.uri_verify import resolve_model_version

    registry = registry or Registry.open(Settings.from_env())
    alias = parse_model_ref(uri).alias
    name, version = resolve_model_version(registry, uri)
    if dst_path is None:
        root = Path(tempfile.mkdtemp(prefix="assay-load-"))
    else:
        root = Path(dst_path)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise AssayError(f"{root} must be an empty folder or not exist yet")
    local = registry.backend.download_version(name, version, root / "model")
    decision = decide(registry, name, version, alias=alias, local_path=local)
    if not decision.allowed:
        import shutil

        shutil.rmtree(root / "model", ignore_errors=True)
        decision.raise_if_refused()

    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(local), **pyfunc_kwargs)

"""An MLflow ``models:`` artifact repository that verifies what it downloads.

assay declares it as MLflow's ``models`` scheme through the entry point group
``mlflow.artifact_repository`` (see pyproject.toml), so once assay is installed *every*
``mlflow.pyfunc.load_model("models:/churn/3")`` (or ``models:/churn@production``) in that
environment downloads the version as usual, then hands ``(name, version, local_path)`` to a verifier
before returning. MLflow itself never checks integrity (DESIGN §4).

The verifier is looked up lazily: the function given to :func:`set_verifier`, else
``assay.registry.enforcement.verify_download(name, version, local_path)`` when that module exists.
It must raise on tampering. The downloaded folder contains ``registered_model_meta`` written by
MLflow (see ``assay.mlflow_access.base.MLFLOW_ADDED_FILES``); the verifier must ignore it.

``ASSAY_ENFORCE`` picks what a failure does:

* ``enforce`` (default; also any unrecognised value): raise :class:`ModelIntegrityError`, which is
  both an ``assay`` ``IntegrityError`` and an ``MlflowException``, so it surfaces unchanged through
  ``mlflow.pyfunc.load_model`` and whoever catches either family catches it. The verifier applies
  the enforcement decision (``assay.registry.enforcement``): unsigned, pending, quarantined or
  compromised versions, versions assay does not manage (unless the policy allows them), a store
  that cannot be read, and a protected alias over a version not known-good are all refused;
* ``warn``: log a warning, record an audit event (when the store is reachable) and load;
* ``off``: do not verify; the load is still an audit event when the store is reachable.

A download of a sub-path (``models:/churn/3/MLmodel``) is verified by downloading the whole version
to a temporary folder first, so a partial read cannot dodge the check.

Not covered (documented gaps): URIs that bypass the registry (``runs:/``, ``models:/m-<model id>``,
plain paths or artifact-store URIs) are not registered versions and pass through unverified. If no
verifier is installed, registered versions are refused (``warn`` lets them through with a warning).

This module is imported by MLflow while it builds its artifact-repository registry, so it imports
nothing heavy at module level.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def __getattr__(attr: str):
    # Importing this module before mlflow makes mlflow load its entry points (this module among
    # them) while this module is half-built. Hand that early lookup a factory that resolves the
    # class when called; the end of this module then registers the class itself.
    if attr == "VerifyingModelsArtifactRepository":
        return _late_factory
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def _late_factory(artifact_uri, tracking_uri=None, registry_uri=None):
    return VerifyingModelsArtifactRepository(
        artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri
    )


from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.protos.databricks_pb2 import INVALID_STATE  # noqa: E402
from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository  # noqa: E402

from assay.core.errors import IntegrityError  # noqa: E402

__all__ = [
    "ENFORCE_ENV",
    "ModelIntegrityError",
    "VerifyingModelsArtifactRepository",
    "enforcement_mode",
    "get_verifier",
    "set_verifier",
]

logger = logging.getLogger(__name__)

ENFORCE_ENV = "ASSAY_ENFORCE"
MODES = ("enforce", "warn", "off")

Verifier = Callable[[str, str, str], None]

_verifier: Verifier | None = None
_warned_missing = False


class ModelIntegrityError(IntegrityError, MlflowException):
    """A registered model version failed assay's verification on download (exit code 3)."""

    def __init__(self, message: str) -> None:
        MlflowException.__init__(self, " ".join(str(message).split()), error_code=INVALID_STATE)

    # AssayError exposes ``message`` as a read-only property; MlflowException assigns it.
    @property
    def message(self) -> str:
        return str(self)

    @message.setter
    def message(self, value: str) -> None:  # the text lives in args[0]
        pass


def set_verifier(fn: Verifier | None) -> Verifier | None:
    """Install ``fn(name, version, local_path)`` as the verifier (None: back to the default).

    Returns the previously installed function (None if the default was in use).
    """
    global _verifier
    previous, _verifier = _verifier, fn
    return previous


def get_verifier() -> Verifier | None:
    """The installed verifier, else ``assay.registry.enforcement.verify_download``, else None."""
    if _verifier is not None:
        return _verifier
    try:
        # Through sys.modules (not ``from assay.registry import enforcement``, which would
        # return the package's attribute once the module was imported anywhere).
        enforcement = importlib.import_module("assay.registry.enforcement")
    except ModuleNotFoundError as exc:
        if exc.name not in ("assay.registry.enforcement", "assay.registry", "assay"):
            raise
        return None
    return getattr(enforcement, "verify_download", None)


def enforcement_mode() -> str:
    """``enforce``, ``warn`` or ``off`` from ``ASSAY_ENFORCE`` (unknown values enforce)."""
    raw = os.environ.get(ENFORCE_ENV, "enforce").strip().lower() or "enforce"
    if raw not in MODES:
        logger.warning("%s=%r is not one of %s; enforcing", ENFORCE_ENV, raw, "|".join(MODES))
        return "enforce"
    return raw


def _is_root(artifact_path: str | None) -> bool:
    return not artifact_path or artifact_path.strip("/") in ("", ".")


class VerifyingModelsArtifactRepository(ModelsArtifactRepository):
    """``ModelsArtifactRepository`` that verifies every registered-version download."""

    def download_artifacts(self, artifact_path, dst_path=None, lineage_header_info=None):
        mode = enforcement_mode()
        name = getattr(self, "model_name", None)
        version = getattr(self, "model_version", None)
        if name is None or version is None:  # a logged-model URI (models:/m-...), not a version
            return super().download_artifacts(artifact_path, dst_path, lineage_header_info)
        if mode == "off":
            _record_unverified(str(name), str(version), "off", f"{ENFORCE_ENV}=off")
            return super().download_artifacts(artifact_path, dst_path, lineage_header_info)
        verifier = get_verifier()
        if verifier is None:
            if mode == "warn":
                _warn_missing()
                return super().download_artifacts(artifact_path, dst_path, lineage_header_info)
            raise ModelIntegrityError(
                f"models:/{name}/{version}: assay's verifier is not installed here; refusing to "
                f"load unverified ({ENFORCE_ENV}=warn to opt out)"
            )
        if _is_root(artifact_path):
            # Always into a folder of our own: without ``dst_path`` a local artifact store hands
            # out its own folder, which whoever can write the store could change between the
            # check and the load (the bytes checked must be the bytes loaded). mkdtemp is 0700.
            if not dst_path:
                dst_path = tempfile.mkdtemp(prefix="assay-load-")
            local = super().download_artifacts(artifact_path, dst_path, lineage_header_info)
            self._verify(verifier, mode, str(name), str(version), local, self._alias())
            return local
        return self._download_part(
            verifier, mode, str(name), str(version), artifact_path, dst_path, lineage_header_info
        )

    def _alias(self) -> str | None:
        """The alias the URI named (``models:/m@production``), or its stage
        (``models:/m/Production``: a stage moved by plain MLflow is the same protected name, in
        any letter case), for the protected-alias rule. None for a version number."""
        uri = str(getattr(self, "artifact_uri", "") or "")
        head = uri.split("?", 1)[0]
        if not head.startswith("models:/"):
            return None
        if "@" in head:
            return head.rsplit("@", 1)[1].split("/", 1)[0] or None
        parts = head.removeprefix("models:/").strip("/").split("/")
        if len(parts) >= 2 and parts[1] and not parts[1].isdigit():
            return parts[1]  # a stage (or "latest")
        return None

    def _download_part(
        self, verifier, mode, name, version, artifact_path, dst_path, lineage_header_info
    ):
        """Verify the whole version, then hand out only ``artifact_path`` from it."""
        rel = artifact_path.strip("/")
        with tempfile.TemporaryDirectory(prefix="assay-verify-") as tmp:
            full = super().download_artifacts("", tmp, lineage_header_info)
            self._verify(verifier, mode, name, version, full, self._alias())
            source = Path(full, *rel.split("/"))
            if not source.exists():
                # Let MLflow produce its usual error for a missing path.
                return super().download_artifacts(artifact_path, dst_path, lineage_header_info)
            dest_root = Path(dst_path) if dst_path else Path(tempfile.mkdtemp())
            target = dest_root.joinpath(*rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copyfile(source, target)
            return str(target)

    @staticmethod
    def _verify(
        verifier: Verifier, mode: str, name: str, version: str, local: str, alias: str | None
    ) -> None:
        try:
            if alias is not None and _takes_alias(verifier):
                verifier(name, version, local, alias=alias)  # type: ignore[call-arg]
            else:
                verifier(name, version, local)
        except Exception as exc:  # any failure of the check refuses the model
            detail = " ".join(str(exc).split()) or type(exc).__name__
            detail = detail.removeprefix(f"refusing models:/{name}/{version}: ")
            text = f"models:/{name}/{version} failed assay verification: {detail}"
            if mode == "warn":
                logger.warning("%s (ASSAY_ENFORCE=warn: loading anyway)", text)
                _record_unverified(name, version, "warn", detail)
                return
            raise ModelIntegrityError(text) from exc
        logger.debug("models:/%s/%s verified at %s", name, version, local)


def _takes_alias(verifier: Verifier) -> bool:
    import inspect

    try:
        return "alias" in inspect.signature(verifier).parameters
    except (TypeError, ValueError):
        return False


def _record_unverified(name: str, version: str, mode: str, reason: str) -> None:
    """An audit event for a load let through unverified (when assay's store is reachable)."""
    try:
        enforcement = importlib.import_module("assay.registry.enforcement")
    except ImportError:
        return
    enforcement.record_unverified_load(f"models:/{name}/{version}", mode, reason)


def _warn_missing() -> None:
    global _warned_missing
    if not _warned_missing:
        _warned_missing = True
        logger.warning(
            "assay's models: repository has no verifier installed; downloads are not verified"
        )


def _register() -> None:
    """Make sure MLflow's registry maps ``models`` to this class (see ``__getattr__``)."""
    from mlflow.store.artifact import artifact_repository_registry as registry

    table = getattr(registry, "_artifact_repository_registry", None)
    if table is not None:
        table.register("models", VerifyingModelsArtifactRepository)


_register()

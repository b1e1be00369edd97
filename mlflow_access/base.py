"""assay's one door to MLflow: registered models, versions, aliases, tags and artifacts.

This module holds the :class:`MlflowBackend` protocol, the records and the helpers both
implementations share; :func:`open_backend` picks one from the tracking URI (``rest.py`` for
http(s), ``embedded.py`` otherwise):

* :class:`RestBackend` (``assay.mlflow_access.rest``) for ``http(s)://`` URIs: a running
  ``mlflow server``. It speaks the MLflow REST API 2.0 with the standard library only and never
  imports ``mlflow`` (``import mlflow`` costs 3-4 s; an incident-time ``get_alias`` /
  ``set_alias`` must not pay that). Artifacts go through the server's proxied artifact endpoints
  (``/api/2.0/mlflow-artifacts/artifacts``, MLflow 3's default ``--serve-artifacts``); only
  sources in another artifact store (``s3://``, ...) fall back to importing ``mlflow``.
* :class:`EmbeddedBackend` for everything else (default ``sqlite:///$ASSAY_HOME/mlflow.db``):
  ``mlflow.MlflowClient``, imported lazily inside methods; registry calls skip its tracking store
  (``MlflowClient``'s registry methods over MLflow's registry client alone). Run artifacts of
  assay's experiment live under ``$ASSAY_HOME/artifacts``.

Both return plain records (:class:`ModelVersionInfo`, :class:`LoggedModel`) and raise only
``AssayError`` subclasses: an unknown model, version or alias is a ``NotFoundError``; an
unreachable server is an ``AssayError`` naming the URL.

What MLflow adds to a download: ``mlflow.pyfunc.load_model("models:/name/1")`` (through
``ModelsArtifactRepository.download_artifacts``) writes a ``registered_model_meta`` YAML file into
the downloaded model folder when it holds an ``MLmodel`` file. That file was never logged, so
manifests must exclude it: :data:`MLFLOW_ADDED_FILES`. :meth:`MlflowBackend.download_version`
returns the stored files and does not add it itself. Beware: with a local artifact store
(``file:``, the embedded default) MLflow returns the store's own folder without copying and writes
``registered_model_meta`` *into the artifact store* on the first ``load_model``, so later
downloads contain it too: exclude :data:`MLFLOW_ADDED_FILES` when hashing, always.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from assay.core.errors import AssayError, NotFoundError, RefusedError

if TYPE_CHECKING:
    from assay.core.settings import Settings

__all__ = [
    "ASSAY_EXPERIMENT",
    "MLFLOW_ADDED_FILES",
    "LoggedModel",
    "MlflowBackend",
    "ModelVersionInfo",
    "RunRecord",
    "is_remote_uri",
    "open_backend",
]

logger = logging.getLogger(__name__)

#: Files MLflow writes into a downloaded model folder that were never logged; manifests exclude
#: them (relative POSIX paths at the model root).
MLFLOW_ADDED_FILES: frozenset[str] = frozenset({"registered_model_meta"})

#: The MLflow experiment that holds assay's registration runs.
ASSAY_EXPERIMENT = "assay"

#: How long ``create_version`` waits for a version to become READY.
READY_TIMEOUT_S = 300.0

_PLAIN = re.compile(r"[A-Za-z0-9._-]{1,250}")


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered model version as MLflow reports it (never trusted: see DESIGN §4)."""

    name: str
    version: str
    source: str
    run_id: str | None
    status: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    description: str = ""


@dataclass(frozen=True)
class LoggedModel:
    """Where ``log_model_dir`` put the files: register ``source_uri`` as a version's source."""

    run_id: str
    source_uri: str
    artifact_path: str
    model_id: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as MLflow reports it: id, status (RUNNING, FINISHED, FAILED...), tags."""

    run_id: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)
    start_time: datetime | None = None


def running_filter(tags: Mapping[str, str]) -> str:
    """An MLflow search filter: RUNNING runs carrying ``tags`` (only values that need no quoting
    are put in the filter; callers check every tag on the answers)."""
    parts = ["attributes.status = 'RUNNING'"]
    for key, value in sorted(tags.items()):
        if _PLAIN.fullmatch(key) and _PLAIN.fullmatch(value):
            parts.append(f"tags.`{key}` = '{value}'")
    return " and ".join(parts)


def has_tags(run: RunRecord, tags: Mapping[str, str]) -> bool:
    return all(run.tags.get(k) == v for k, v in tags.items())


def end_quietly(end: Any, run_id: str) -> None:
    """Call ``end()`` (mark a failed run FAILED) while an error is on its way up: a failure to
    end the run is logged, never raised in place of the error that caused it."""
    try:
        end()
    except Exception as exc:  # noqa: BLE001 - the original error matters more
        logger.warning("could not mark MLflow run %s FAILED: %s", run_id, exc)


@runtime_checkable
class MlflowBackend(Protocol):
    """What assay needs from MLflow. Versions are strings ("3"), as MLflow returns them."""

    tracking_uri: str

    def initialise(self) -> None:
        """Create MLflow's schema and assay's experiment; idempotent; call from ``assay init``."""

    def log_model_dir(
        self,
        local_path: str | os.PathLike[str],
        *,
        artifact_path: str = "model",
        run_name: str | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> LoggedModel:
        """Log a folder (an MLflow model folder or plain weights) or one file as run artifacts."""
        ...

    def log_artifact_file(
        self, run_id: str, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> str:
        """Log one file into a run's artifacts under ``artifact_path``; return its URI."""
        ...

    def log_artifact_dir(
        self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> str:
        """Log a folder's files into a run's artifacts under ``artifact_path``; return its URI."""
        ...

    def run_artifact_uri(self, run_id: str) -> str:
        """The root artifact URI of a run."""
        ...

    def get_run(self, run_id: str) -> RunRecord: ...

    def running_runs(self, tags: Mapping[str, str]) -> list[RunRecord]:
        """The RUNNING runs of assay's experiment that carry every tag in ``tags``."""
        ...

    def end_run(self, run_id: str, status: str = "FAILED") -> None:
        """Terminate a run with ``status`` (FAILED, FINISHED or KILLED)."""

    def ensure_registered_model(self, name: str) -> None:
        """Create the registered model unless it exists (safe under concurrency)."""

    def create_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> ModelVersionInfo:
        """Create a version (and the model if needed); wait until it is READY."""
        ...

    def delete_version(self, name: str, version: str | int) -> None: ...

    def get_version(self, name: str, version: str | int) -> ModelVersionInfo: ...

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        """Every version of ``name``, oldest first; NotFoundError if the model does not exist."""
        ...

    def list_models(self) -> list[str]: ...

    def get_alias(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points to, None if unset; NotFoundError for an unknown model."""
        ...

    def set_alias(self, name: str, alias: str, version: str | int) -> None: ...

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` (no error if it is not set)."""

    def aliases(self, name: str) -> dict[str, str]: ...

    def set_version_tag(self, name: str, version: str | int, key: str, value: str) -> None: ...

    def delete_version_tag(self, name: str, version: str | int, key: str) -> None:
        """Remove a tag (no error if it is not set)."""

    def version_download_uri(self, name: str, version: str | int) -> str: ...

    def download_version(
        self, name: str, version: str | int, dest_dir: str | os.PathLike[str]
    ) -> Path:
        """Download exactly the logged files of a version into ``dest_dir`` (which must be empty
        or absent); return ``dest_dir``. Nothing is added (see :data:`MLFLOW_ADDED_FILES`)."""
        ...

    def download_uri(self, uri: str, dest_dir: str | os.PathLike[str]) -> Path:
        """Download the artifact folder or file at ``uri`` into ``dest_dir``."""
        ...


def is_remote_uri(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in ("http", "https")


def open_backend(settings: Settings) -> MlflowBackend:
    """The backend for ``settings.tracking_uri``: REST for http(s), embedded MLflow otherwise."""
    uri = settings.tracking_uri
    if is_remote_uri(uri):
        from assay.mlflow_access.rest import RestBackend

        return RestBackend(uri)
    from assay.mlflow_access.embedded import EmbeddedBackend

    return EmbeddedBackend(uri, artifacts_dir=settings.artifacts_dir)


# --- helpers shared by both backends ---------------------------------------------------------


def describe(name: str, version: str | None = None) -> str:
    return f"model '{name}' version {version}" if version is not None else f"model '{name}'"


def map_error(code: str, message: str, what: str) -> AssayError:
    """One-line AssayError for an MLflow error ``code``/``message`` met while doing ``what``.

    ``what`` names the thing, e.g. "model 'churn' version 7" (see :func:`describe`).
    """
    text = " ".join(str(message).split()) or code
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
        if what.startswith("model '") and " version " in what and "Model Version" in text:
            name_part, _, version = what.rpartition(" version ")
            return NotFoundError(f"{name_part} has no version {version}")
        if what.startswith("model '") and "Registered Model" in text:
            model = what.split("'")[1]
            return NotFoundError(f"no registered model named '{model}'")
        return NotFoundError(f"{what}: {text}")
    if code == "RESOURCE_ALREADY_EXISTS":
        return RefusedError(f"{what} already exists: {text}")
    if code == "PERMISSION_DENIED":  # e.g. the assay guard in the server (mlflow_guard.py)
        return RefusedError(f"MLflow refused {what}: {text}")
    return AssayError(f"MLflow refused {what}: {text}")


def aliases_by_version(aliases: Mapping[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        out.setdefault(str(version), []).append(alias)
    return out


def with_aliases(mv: ModelVersionInfo, by_version: Mapping[str, list[str]]) -> ModelVersionInfo:
    """``mv`` with its aliases from the registered model (version searches leave them out)."""
    return replace(mv, aliases=sorted(by_version.get(mv.version, [])))


def version_str(version: str | int) -> str:
    text = str(version).strip()
    if not text.isdigit():
        raise NotFoundError(f"model version must be a number, got {version!r}")
    return str(int(text))


def ms_to_datetime(ms: Any) -> datetime | None:
    if ms in (None, "", 0):
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc)


def name_filter(name: str) -> str:
    """An MLflow search filter matching exactly the model ``name``."""
    if "'" not in name:
        return f"name = '{name}'"
    if '"' not in name:
        return f'name = "{name}"'
    raise RefusedError(f"model name {name!r} mixes both quote characters; MLflow cannot search it")


def prepare_dest(dest_dir: str | os.PathLike[str]) -> Path:
    dest = Path(dest_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise RefusedError(f"download folder {dest} exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def wait_ready(get: Any, name: str, version: str, timeout: float = READY_TIMEOUT_S) -> Any:
    """Poll ``get()`` until the version's status is READY; raise on FAILED_REGISTRATION."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        info = get()
        if info.status == "READY":
            return info
        if info.status == "FAILED_REGISTRATION":
            raise AssayError(f"MLflow failed to register model '{name}' version {version}")
        if time.monotonic() > deadline:
            raise AssayError(
                f"model '{name}' version {version} still {info.status} after {timeout:.0f} s"
            )
        time.sleep(delay)
        delay = min(delay * 2, 1.0)

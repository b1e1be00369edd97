"""``mlflow server --app-name assay-guard``: MLflow's own server with assay's rules in front of the
registry writes that decide what serves.

The ``mlflow.app`` entry point ``assay-guard`` names :func:`create_app`, a factory like MLflow's
``basic-auth`` app: it adds one ``before_request`` hook to MLflow's Flask app and, under uvicorn
(MLflow 3's default), wraps it in MLflow's FastAPI app. Every other request is served by MLflow
unchanged. The hook recognises the guarded calls by the MLflow handler Flask routed the request to
(so ``/api/2.0/...``, ``/ajax-api/2.0/...`` and a static prefix are all covered), parses the
request with MLflow's own parser (the handler sees the same fields), and asks
:class:`assay.integrations.guard.Guard`. A refusal is HTTP 403 with MLflow's error shape,
``{"error_code": "PERMISSION_DENIED", "message": "assay guard: ..."}`` (plus ``assay_code``), which
``MlflowClient`` raises as an ``MlflowException``.

assay's store comes from the server's environment (``ASSAY_DB_URL`` / ``ASSAY_HOME``, as for the
CLI). MLflow is read in process: the server's own registry store, and ``mlflow-artifacts:/``
sources through the server's artifact repository (no HTTP request to itself). This module imports
mlflow; only the server loads it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from assay.core.errors import AssayError, IntegrityError, Refusal
from assay.core.settings import Settings
from assay.integrations.guard import Guard
from assay.mlflow_access.base import MlflowBackend, prepare_dest
from assay.mlflow_access.embedded import EmbeddedBackend
from assay.registry.facade import Registry

__all__ = ["GuardRegistry", "ServerBackend", "ServerView", "create_app", "install"]

log = logging.getLogger("assay.guard")

ERROR_CODE = "PERMISSION_DENIED"


# --- MLflow, read in the server's process ------------------------------------------------------


class ServerView:
    """:class:`assay.integrations.guard.MlflowView` over the server's own model registry store."""

    #: Backends whose name comparison is exact (binary collation): a request's name is the name
    #: MLflow acts on, so no lookup is needed to find it (MySQL and SQL Server compare names
    #: case-insensitively by default: there the stored spelling is looked up).
    EXACT_NAMES = ("sqlite", "postgresql")

    def __init__(self) -> None:
        from mlflow.server import handlers

        self._store = handlers._get_model_registry_store()
        self._exact = getattr(self._store, "db_type", None) in self.EXACT_NAMES

    def _missing(self, exc: Exception) -> bool:
        return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"

    def canonical_name(self, name: str) -> str | None:
        if self._exact:
            return name
        from mlflow.exceptions import MlflowException

        try:
            return self._store.get_registered_model(name).name
        except MlflowException as exc:
            if self._missing(exc):
                return None
            raise

    def aliases(self, name: str) -> Mapping[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            model = self._store.get_registered_model(name)
        except MlflowException as exc:
            if self._missing(exc):
                return {}  # MLflow answers the call itself with RESOURCE_DOES_NOT_EXIST
            raise
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def stage(self, name: str, version: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._store.get_model_version(name, version).current_stage
        except MlflowException as exc:
            if self._missing(exc):
                return None
            raise


class ServerBackend(EmbeddedBackend):
    """assay's MLflow backend inside the server: the server's backend store, and
    ``mlflow-artifacts:/`` URIs read through the server's artifact repository."""

    def _repo_path(self, uri: str) -> tuple[Any, str]:
        """The server's artifact repository and the path of ``uri`` in it (checked as the
        server's own download handler checks it)."""
        from mlflow.server import handlers
        from mlflow.utils.uri import validate_path_is_safe

        path = validate_path_is_safe(urlparse(uri).path.lstrip("/"))
        scoped = getattr(handlers, "_get_workspace_scoped_repo_path_if_enabled", None)
        if scoped is not None:
            path = scoped(path)
        return handlers._get_artifact_repo_mlflow_artifacts(), path

    def local_artifact_path(self, uri: str) -> Path | None:
        """The folder behind a ``mlflow-artifacts:/`` URI when the server stores it locally:
        verified in place, exactly the bytes the server serves."""
        if not uri.startswith("mlflow-artifacts:"):
            return None
        from mlflow.exceptions import MlflowException

        repo, path = self._repo_path(uri)
        try:
            local = getattr(repo, "get_local_path", lambda _p: None)(path)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                raise IntegrityError(f"{uri}: its files are gone from the artifact store") from exc
            raise
        return Path(local) if local is not None else None

    def download_uri(self, uri: str, dest_dir: str | os.PathLike[str]) -> Path:
        if not uri.startswith("mlflow-artifacts:"):
            return super().download_uri(uri, dest_dir)
        repo, path = self._repo_path(uri)
        dest = prepare_dest(dest_dir)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".assay-dl-") as tmp:
            got = Path(repo.download_artifacts(path, dst_path=tmp))
            for child in got.iterdir() if got.is_dir() else [got]:
                shutil.move(str(child), dest / child.name)
        return dest


def server_store_uri(default: str) -> str:
    """The registry store URI the server was started with (its ``--backend-store-uri``)."""
    from mlflow.server import BACKEND_STORE_URI_ENV_VAR, REGISTRY_STORE_URI_ENV_VAR

    return (
        os.environ.get(REGISTRY_STORE_URI_ENV_VAR)
        or os.environ.get(BACKEND_STORE_URI_ENV_VAR)
        or default
    )


class GuardRegistry(Registry):
    """A ``Registry`` whose MLflow is the server it runs in."""

    @cached_property
    def backend(self) -> MlflowBackend:
        return ServerBackend(
            server_store_uri(self.settings.tracking_uri), artifacts_dir=self.settings.artifacts_dir
        )


class _RegistryCache:
    """One registry per server process, opened on first use and again after a store failure."""

    def __init__(self, settings: Callable[[], Settings]) -> None:
        self._settings = settings
        self._registry: Registry | None = None
        self._lock = threading.Lock()

    def get(self) -> Registry:
        with self._lock:
            if self._registry is None:
                settings = self._settings()
                self._registry = GuardRegistry.open(
                    replace(settings, tracking_uri=server_store_uri(settings.tracking_uri))
                )
            return self._registry

    def reset(self) -> None:
        with self._lock:
            registry, self._registry = self._registry, None
        if registry is not None:
            registry.store.dispose()


# --- the Flask hook ----------------------------------------------------------------------------

Rule = Callable[[Guard, Any], "Refusal | None"]


def _rules() -> dict[Any, tuple[tuple[str, ...], Rule]]:
    """Request class -> (its required fields, the guard's check)."""
    from mlflow.protos.model_registry_pb2 import (
        DeleteModelVersion,
        DeleteRegisteredModel,
        DeleteRegisteredModelAlias,
        RenameRegisteredModel,
        SetRegisteredModelAlias,
        TransitionModelVersionStage,
    )

    return {
        SetRegisteredModelAlias: (
            ("name", "alias", "version"),
            lambda g, m: g.set_alias(m.name, m.alias, m.version),
        ),
        DeleteRegisteredModelAlias: (
            ("name", "alias"),
            lambda g, m: g.delete_alias(m.name, m.alias),
        ),
        DeleteModelVersion: (
            ("name", "version"),
            lambda g, m: g.delete_version(m.name, m.version),
        ),
        DeleteRegisteredModel: (("name",), lambda g, m: g.delete_model(m.name)),
        RenameRegisteredModel: (
            ("name", "new_name"),
            lambda g, m: g.rename_model(m.name, m.new_name),
        ),
        TransitionModelVersionStage: (
            ("name", "version", "stage"),
            lambda g, m: g.transition_stage(m.name, m.version, m.stage),
        ),
    }


def refusal_response(refusal: Refusal) -> Any:
    """HTTP 403 in MLflow's error shape (one line of JSON)."""
    from flask import Response

    body = {"error_code": ERROR_CODE, "message": refusal.message, "assay_code": refusal.code}
    return Response(json.dumps(body), status=403, mimetype="application/json")


def install(
    flask_app: Any,
    *,
    settings: Callable[[], Settings] = Settings.from_env,
    guard_factory: Callable[[Registry], Guard] | None = None,
) -> None:
    """Add the guard's ``before_request`` hook to MLflow's Flask app."""
    from flask import request
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers

    guarded = {handlers.get_handler(cls): (cls, *rule) for cls, rule in _rules().items()}
    cache = _RegistryCache(settings)
    make_guard = guard_factory or (lambda registry: Guard(registry, ServerView()))

    def guard_request() -> Any:
        view = flask_app.view_functions.get(request.endpoint) if request.endpoint else None
        entry = guarded.get(view)
        if entry is None:
            return None
        cls, required, check = entry
        try:
            message = handlers._get_request_message(cls())
        except MlflowException as exc:  # what the handler itself would answer
            from flask import Response

            return Response(
                exc.serialize_as_json(),
                status=exc.get_http_status_code(),
                mimetype="application/json",
            )
        if not all(getattr(message, f) for f in required):
            return None  # the handler refuses a missing field with MLflow's own 400
        try:
            guard = make_guard(cache.get())
        except AssayError as exc:
            refusal = Refusal(
                "store-unreachable",
                f"assay guard: cannot open assay's store ({exc}); refusing (fail closed)",
            )
        except Exception as exc:  # noqa: BLE001 - fail closed on anything
            refusal = Refusal("guard-error", f"assay guard: cannot start ({type(exc).__name__})")
        else:
            refusal = check(guard, message)
        if refusal is None:
            return None
        if refusal.code in ("store-unreachable", "guard-error"):
            cache.reset()
        log.warning("refused %s %s: %s", request.method, request.path, refusal.message)
        return refusal_response(refusal)

    flask_app.before_request(guard_request)
    try:
        cache.get()
    except Exception as exc:  # noqa: BLE001 - the server still starts, and refuses guarded calls
        log.warning(
            "assay's store cannot be read (%s): guarded calls are refused until it can", exc
        )


def create_app(app: Any = None) -> Any:
    """The ``assay-guard`` app: MLflow's server app with the guard installed."""
    from mlflow.environment_variables import _MLFLOW_SGI_NAME
    from mlflow.server import app as mlflow_app

    flask_app = app if app is not None else mlflow_app
    install(flask_app)
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(flask_app)
    return flask_app

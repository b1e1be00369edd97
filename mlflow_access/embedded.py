"""MLflow in this process: :class:`EmbeddedBackend` over ``mlflow.MlflowClient`` (imported on first
use), for sqlite and every non-http tracking URI; and ``download_with_mlflow``, MLflow's own
downloader, which the REST backend also uses for artifact stores it cannot read itself.

Registry calls (versions, aliases, tags) go through :class:`_RegistryView`: ``MlflowClient``'s own
registry methods over MLflow's registry client alone. ``MlflowClient(...)`` opens the *tracking*
store first (its ORM, mapper set-up and schema check), which a registry call never uses; that is
built only for runs and artifacts."""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import AssayError, ConfigError, NotFoundError, RefusedError
from assay.mlflow_access.base import (
    ASSAY_EXPERIMENT,
    LoggedModel,
    ModelVersionInfo,
    RunRecord,
    aliases_by_version,
    end_quietly,
    has_tags,
    map_error,
    ms_to_datetime,
    name_filter,
    prepare_dest,
    running_filter,
    version_str,
    wait_ready,
    with_aliases,
)

if TYPE_CHECKING:
    pass

__all__ = ["EmbeddedBackend", "download_with_mlflow"]

_PAGE = 1000  # MLflow search page size


class EmbeddedBackend:
    """MLflow in this process through ``MlflowClient`` (imported on first use)."""

    def __init__(self, tracking_uri: str, *, artifacts_dir: str | os.PathLike[str]) -> None:
        self.tracking_uri = tracking_uri
        self.artifacts_dir = Path(artifacts_dir)
        self._client_obj: Any = None
        self._registry_obj: _RegistryView | None = None
        self._experiment_id: str | None = None
        self._reader_obj: Any = None  # None: not opened yet; False: fast path unavailable

    # -- plumbing --

    @property
    def _reader(self) -> Any:
        """The read-only sqlite3 fast path (``assay.mlflow_access.sqlite_reader``), or None."""
        if self._reader_obj is None:
            from assay.mlflow_access.sqlite_reader import open_reader

            self._reader_obj = open_reader(self.tracking_uri) or False
        return self._reader_obj or None

    def __repr__(self) -> str:
        return f"EmbeddedBackend({self.tracking_uri!r})"

    def _check_database(self) -> None:
        """Refuse a missing sqlite database: MLflow's stores would create an empty one."""
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri[len("sqlite:///") :])
            if not db.exists():
                raise ConfigError(f"MLflow database {db} does not exist; run 'assay init' first")

    @property
    def _client(self) -> Any:
        """The full ``MlflowClient`` (tracking store too): runs, experiments, artifacts."""
        if self._client_obj is None:
            self._check_database()
            self._client_obj = _mlflow_client_class()(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client_obj

    @property
    def _registry(self) -> Any:
        """``MlflowClient``'s registry methods without its tracking store (:class:`_RegistryView`)."""
        if self._registry_obj is None:
            self._check_database()
            _mlflow_client_class()  # the same one-line error when mlflow is missing
            self._registry_obj = _RegistryView(self.tracking_uri, lambda: self._client)
        return self._registry_obj

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            raise _map_mlflow_exception(exc, what) from exc

    @property
    def _artifact_root_uri(self) -> str:
        return self.artifacts_dir.resolve().as_uri()

    # -- set-up --

    def initialise(self) -> None:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
            # Build the tracking store ourselves so the Default experiment MLflow creates with the
            # schema gets its artifacts under ASSAY_HOME rather than ./mlruns of the caller's cwd.
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            try:
                store = SqlAlchemyStore(self.tracking_uri, self._artifact_root_uri)
            except Exception as exc:
                raise AssayError(
                    f"cannot create the MLflow schema at {self.tracking_uri}: {exc}"
                ) from exc
            store.engine.dispose()
        client = self._client
        self._call("list registered models", client.search_registered_models, max_results=1)
        self._experiment()

    def _experiment(self) -> str:
        if self._experiment_id is not None:
            return self._experiment_id
        from mlflow.exceptions import MlflowException

        client = self._client
        exp = self._call("read experiment", client.get_experiment_by_name, ASSAY_EXPERIMENT)
        if exp is None:
            try:
                location = (self.artifacts_dir / ASSAY_EXPERIMENT).resolve().as_uri()
                self._experiment_id = client.create_experiment(
                    ASSAY_EXPERIMENT, artifact_location=location
                )
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise _map_mlflow_exception(exc, "create experiment") from exc
                exp = client.get_experiment_by_name(ASSAY_EXPERIMENT)
                self._experiment_id = exp.experiment_id
        else:
            self._experiment_id = exp.experiment_id
        return self._experiment_id

    # -- artifacts --

    def log_model_dir(
        self,
        local_path: str | os.PathLike[str],
        *,
        artifact_path: str = "model",
        run_name: str | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> LoggedModel:
        local = Path(local_path)
        if not local.exists():
            raise NotFoundError(f"no such file or folder: {local}")
        client = self._client
        run = self._call(
            "create run",
            client.create_run,
            self._experiment(),
            run_name=run_name,
            tags=dict(tags or {}),
        )
        run_id = run.info.run_id
        try:
            for key, value in (params or {}).items():
                self._call("log param", client.log_param, run_id, key, str(value))
            if local.is_dir():
                self._call("log artifacts", client.log_artifacts, run_id, str(local), artifact_path)
            else:
                self._call("log artifact", client.log_artifact, run_id, str(local), artifact_path)
        except BaseException:  # an interrupted upload leaves no run RUNNING
            end_quietly(lambda: client.set_terminated(run_id, status="FAILED"), run_id)
            raise
        self.end_run(run_id, "FINISHED")
        source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path.strip('/')}"
        return LoggedModel(run_id=run_id, source_uri=source, artifact_path=artifact_path)

    def log_artifact_file(
        self, run_id: str, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> str:
        client = self._client
        self._call("log artifact", client.log_artifact, run_id, str(local_path), artifact_path)
        parts = [self.run_artifact_uri(run_id).rstrip("/")]
        if artifact_path:
            parts.append(artifact_path.strip("/"))
        parts.append(Path(local_path).name)
        return "/".join(parts)

    def log_artifact_dir(
        self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> str:
        client = self._client
        self._call("log artifacts", client.log_artifacts, run_id, str(local_dir), artifact_path)
        root = self.run_artifact_uri(run_id).rstrip("/")
        return f"{root}/{artifact_path.strip('/')}" if artifact_path else root

    def run_artifact_uri(self, run_id: str) -> str:
        run = self._call(f"run {run_id}", self._client.get_run, run_id)
        return run.info.artifact_uri

    def get_run(self, run_id: str) -> RunRecord:
        return _run_from_entity(self._call(f"run {run_id}", self._client.get_run, run_id))

    def running_runs(self, tags: Mapping[str, str]) -> list[RunRecord]:
        client = self._client
        out: list[RunRecord] = []
        token = None
        while True:
            page = self._call(
                "search runs",
                client.search_runs,
                [self._experiment()],
                filter_string=running_filter(tags),
                max_results=_PAGE,
                page_token=token,
            )
            out.extend(
                r
                for r in map(_run_from_entity, page)
                if r.status == "RUNNING" and has_tags(r, tags)
            )
            token = page.token
            if not token:
                break
        return out

    def end_run(self, run_id: str, status: str = "FAILED") -> None:
        self._call(f"end run {run_id}", self._client.set_terminated, run_id, status=status)

    def download_uri(self, uri: str, dest_dir: str | os.PathLike[str]) -> Path:
        dest = prepare_dest(dest_dir)
        download_with_mlflow(uri, dest, self.tracking_uri)
        return dest

    def version_download_uri(self, name: str, version: str | int) -> str:
        v = version_str(version)
        registry = self._registry
        return self._call(
            f"model '{name}' version {v}", registry.get_model_version_download_uri, name, v
        )

    def download_version(
        self, name: str, version: str | int, dest_dir: str | os.PathLike[str]
    ) -> Path:
        return self.download_uri(self.version_download_uri(name, version), dest_dir)

    # -- registry --

    def ensure_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._registry.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise _map_mlflow_exception(exc, f"model '{name}'") from exc

    def create_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> ModelVersionInfo:
        self.ensure_registered_model(name)
        mv = self._call(
            f"model '{name}'",
            self._registry.create_model_version,
            name,
            source,
            run_id=run_id,
            tags=dict(tags or {}),
            description=description,
            await_creation_for=0,
        )
        return wait_ready(lambda: self.get_version(name, mv.version), name, mv.version)

    def delete_version(self, name: str, version: str | int) -> None:
        v = version_str(version)
        self._call(f"model '{name}' version {v}", self._registry.delete_model_version, name, v)

    def get_version(self, name: str, version: str | int) -> ModelVersionInfo:
        v = version_str(version)
        if (reader := self._reader) is not None:
            found = reader.versions(name, v)
            if found:
                return found[0]
            raise NotFoundError(f"model '{name}' has no version {v}")
        mv = self._call(f"model '{name}' version {v}", self._registry.get_model_version, name, v)
        return _from_entity(mv)

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        if (reader := self._reader) is not None:
            if not reader.model_exists(name):
                raise NotFoundError(f"no registered model named '{name}'")
            return reader.versions(name)
        registry = self._registry
        by_version = aliases_by_version(self.aliases(name))
        out: list[ModelVersionInfo] = []
        token = None
        while True:
            page = self._call(
                f"versions of model '{name}'",
                registry.search_model_versions,
                name_filter(name),
                max_results=_PAGE,
                page_token=token,
            )
            out.extend(with_aliases(_from_entity(mv), by_version) for mv in page if mv.name == name)
            token = page.token
            if not token:
                break
        return sorted(out, key=lambda mv: int(mv.version))

    def list_models(self) -> list[str]:
        if (reader := self._reader) is not None:
            return reader.list_models()
        registry = self._registry
        names: list[str] = []
        token = None
        while True:
            page = self._call(
                "list registered models",
                registry.search_registered_models,
                max_results=_PAGE,
                page_token=token,
            )
            names.extend(rm.name for rm in page)
            token = page.token
            if not token:
                break
        return sorted(names)

    def aliases(self, name: str) -> dict[str, str]:
        if (reader := self._reader) is not None:
            if not reader.model_exists(name):
                raise NotFoundError(f"no registered model named '{name}'")
            return reader.aliases(name)
        rm = self._call(f"model '{name}'", self._registry.get_registered_model, name)
        return {alias: str(v) for alias, v in (rm.aliases or {}).items()}

    def get_alias(self, name: str, alias: str) -> str | None:
        return self.aliases(name).get(alias)

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        v = version_str(version)
        self._call(
            f"model '{name}' version {v}", self._registry.set_registered_model_alias, name, alias, v
        )

    def delete_alias(self, name: str, alias: str) -> None:
        if alias not in self.aliases(name):
            return
        self._call(
            f"alias '{alias}' of model '{name}'",
            self._registry.delete_registered_model_alias,
            name,
            alias,
        )

    def set_version_tag(self, name: str, version: str | int, key: str, value: str) -> None:
        v = version_str(version)
        self._call(
            f"model '{name}' version {v}",
            self._registry.set_model_version_tag,
            name,
            v,
            key,
            str(value),
        )

    def delete_version_tag(self, name: str, version: str | int, key: str) -> None:
        v = version_str(version)
        if key not in self.get_version(name, v).tags:
            return
        self._call(
            f"model '{name}' version {v}", self._registry.delete_model_version_tag, name, v, key
        )


def _mlflow_client_class() -> Any:
    """``mlflow.MlflowClient`` (importing mlflow), or a ConfigError naming the extra to install."""
    try:
        from mlflow import MlflowClient
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "the embedded MLflow backend needs mlflow: pip install 'assay-integrity[mlflow]'"
        ) from exc
    return MlflowClient


#: ``MlflowClient`` methods :class:`_RegistryView` runs itself: the registry calls assay makes and
#: the registry helpers they call on ``self``.
_REGISTRY_METHODS = frozenset(
    {
        "_get_registry_client",
        "_raise_if_prompt",
        "create_registered_model",
        "get_registered_model",
        "search_registered_models",
        "create_model_version",
        "_create_model_version",
        "get_model_version",
        "get_latest_versions",
        "search_model_versions",
        "delete_model_version",
        "get_model_version_download_uri",
        "set_registered_model_alias",
        "delete_registered_model_alias",
        "set_model_version_tag",
        "delete_model_version_tag",
    }
)


class _RegistryView:
    """``MlflowClient``'s registry methods over MLflow's registry client alone.

    Each method in :data:`_REGISTRY_METHODS` is the installed ``MlflowClient``'s own function bound
    to this object, so its argument checks, prompt refusals and errors are MLflow's; its
    ``_get_registry_client`` builds the ``ModelRegistryClient`` (the registry store only). Any
    other attribute such a method reaches for (the tracking client, for one: ``create_model_version``
    reads its URI) comes from the full client ``full()`` builds, so a method this view cannot serve
    alone still runs as ``MlflowClient``'s, only without the saving."""

    def __init__(self, uri: str, full: Callable[[], Any]) -> None:
        self._registry_uri = uri
        self.tracking_uri = uri
        self._registry_client_lazy: Any = None  # set by MlflowClient._get_registry_client
        self._full = full

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_full":
            raise AttributeError(name)
        cls = _mlflow_client_class()
        fn = inspect.getattr_static(cls, name, None)
        if name in _REGISTRY_METHODS and isinstance(fn, types.FunctionType):
            return types.MethodType(fn, self)
        return getattr(self._full(), name)


def _from_entity(mv: Any) -> ModelVersionInfo:
    aliases = getattr(mv, "aliases", None) or []
    return ModelVersionInfo(
        name=mv.name,
        version=str(mv.version),
        source=mv.source or "",
        run_id=mv.run_id or None,
        status=str(mv.status),
        tags=dict(mv.tags or {}),
        aliases=sorted(aliases),
        created_at=ms_to_datetime(mv.creation_timestamp),
        description=mv.description or "",
    )


def _run_from_entity(run: Any) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        status=str(run.info.status),
        tags=dict(run.data.tags or {}),
        start_time=ms_to_datetime(run.info.start_time),
    )


def _map_mlflow_exception(exc: Any, what: str) -> AssayError:
    """One-line AssayError for an MlflowException raised while doing ``what``."""
    return map_error(getattr(exc, "error_code", ""), getattr(exc, "message", str(exc)), what)


def download_with_mlflow(uri: str, dest: Path, tracking_uri: str) -> None:
    """Download ``uri`` (folder or file) into the empty folder ``dest`` with mlflow."""
    local_source = _local_path(uri)
    if local_source is not None:
        _copy_local(local_source, dest, uri)
        return
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    # Download the parent "folder" entry of the URI so a single-file source lands as dest/<file>
    # and a folder source lands as dest/<its files>.
    try:
        repo = get_artifact_repository(uri, tracking_uri=tracking_uri, registry_uri=tracking_uri)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".assay-dl-") as tmp:
            local = Path(repo.download_artifacts("", dst_path=tmp))
            if local.is_dir():
                for child in local.iterdir():
                    shutil.move(str(child), dest / child.name)
            else:
                shutil.move(str(local), dest / local.name)
    except MlflowException as exc:
        raise _map_mlflow_exception(exc, f"download {uri}") from exc
    except OSError as exc:
        raise AssayError(f"cannot download {uri}: {exc}") from exc


def _local_path(uri: str) -> Path | None:
    """The local path of a ``file:`` URI or plain path; None for any other scheme."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def _copy_local(source: Path, dest: Path, uri: str) -> None:
    """Copy a local artifact folder (or file) into ``dest``; refuse symlinks."""
    if not source.exists():
        raise NotFoundError(f"artifact {uri} does not exist")
    if source.is_symlink():
        raise RefusedError(f"artifact {uri} is a symlink")
    if source.is_file():
        shutil.copyfile(source, dest / source.name)
        return
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        rel = Path(dirpath).relative_to(source)
        for entry in [*dirnames, *filenames]:
            if (Path(dirpath) / entry).is_symlink():
                raise RefusedError(f"artifact {uri} contains a symlink: {rel / entry}")
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for fname in filenames:
            shutil.copyfile(Path(dirpath) / fname, dest / rel / fname)

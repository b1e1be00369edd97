"""MLflow over its REST API 2.0 with the standard library only: no ``import mlflow``.

Used for ``http(s)://`` tracking URIs (a running ``mlflow server``), so incident-time commands
(read versions, move aliases, tag) answer in a fraction of a second instead of paying 3-4 s to
import mlflow. Endpoints (``/api/2.0/mlflow/...``, see MLflow's REST API reference):

* registered-models ``create`` / ``get`` / ``search``; ``alias`` (POST sets, DELETE removes);
* model-versions ``create`` / ``get`` / ``search`` / ``delete`` / ``set-tag`` / ``delete-tag`` /
  ``get-download-uri``;
* experiments ``get-by-name`` / ``create``; runs ``create`` / ``get`` / ``update`` / ``log-batch``;
* proxied artifacts (``mlflow server --serve-artifacts``, MLflow 3's default):
  ``GET /api/2.0/mlflow-artifacts/artifacts?path=DIR`` lists, ``GET .../artifacts/PATH``
  downloads, ``PUT .../artifacts/PATH`` uploads. ``mlflow-artifacts:/PATH`` URIs map onto them.

Artifacts stored elsewhere (``s3://``, ``gs://``, a server without ``--serve-artifacts``) fall back
to mlflow's own artifact repositories, which imports mlflow.

Credentials: ``MLFLOW_TRACKING_TOKEN`` (bearer) or ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` (basic), as mlflow itself reads them.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from assay.core.errors import AssayError, FormatError, NotFoundError, UnsafeInputError
from assay.mlflow_access.base import (
    ASSAY_EXPERIMENT,
    LoggedModel,
    ModelVersionInfo,
    RunRecord,
    aliases_by_version,
    describe,
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

__all__ = ["MlflowRestClient", "MlflowRestError", "RestBackend"]

_API = "/api/2.0/mlflow"
_ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
_PAGE = 1000
_CHUNK = 1 << 20


class MlflowRestError(AssayError):
    """An error answer from the MLflow server (``error_code`` as MLflow names it)."""

    def __init__(
        self, message: str, *, error_code: str = "", status: int = 0, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status = status
        self.detail = detail or message


class MlflowRestClient:
    """A minimal JSON client for one MLflow server."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, retries: int = 2) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self._headers = {"Accept": "application/json", "User-Agent": "assay"}
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif user and password:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"

    # -- transport --

    def _open(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: bytes | Any | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(
                {k: v for k, v in query.items() if v is not None}, doseq=True
            )
        all_headers = dict(self._headers)
        all_headers.update(headers or {})
        attempt = 0
        while True:
            request = urllib.request.Request(url, data=body, method=method, headers=all_headers)
            try:
                return urllib.request.urlopen(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                error = self._http_error(exc, method, path)
                # 5xx on an idempotent read: retry a couple of times.
                if exc.code >= 500 and method == "GET" and attempt < self.retries:
                    attempt += 1
                    time.sleep(0.2 * attempt)
                    continue
                raise error from exc
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                retryable = method == "GET" and not isinstance(reason, ConnectionRefusedError)
                if retryable and attempt < self.retries:
                    attempt += 1
                    time.sleep(0.2 * attempt)
                    continue
                raise AssayError(f"cannot reach MLflow at {self.base_url}: {reason}") from exc

    def _http_error(self, exc: urllib.error.HTTPError, method: str, path: str) -> MlflowRestError:
        try:
            raw = exc.read().decode("utf-8", "replace")
        except OSError:
            raw = ""
        code, message = "", raw.strip()
        try:
            doc = json.loads(raw)
            code = str(doc.get("error_code", ""))
            message = str(doc.get("message", "")) or message
        except (ValueError, AttributeError):
            pass
        if not code and exc.code == 404:
            code = "RESOURCE_DOES_NOT_EXIST" if _ARTIFACTS in path else "ENDPOINT_NOT_FOUND"
        message = " ".join(message.split())[:300] or f"HTTP {exc.code}"
        return MlflowRestError(
            f"MLflow {method} {path}: {code or exc.code}: {message}",
            error_code=code or f"HTTP_{exc.code}",
            status=exc.code,
            detail=message,
        )

    def call(
        self, method: str, endpoint: str, payload: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Call ``/api/2.0/mlflow/<endpoint>``: GET sends ``payload`` as query, others as JSON."""
        path = f"{_API}/{endpoint}"
        if method == "GET":
            resp = self._open("GET", path, query=payload)
        else:
            body = json.dumps(dict(payload or {})).encode()
            resp = self._open(method, path, body=body, headers={"Content-Type": "application/json"})
        with resp:
            raw = resp.read()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise AssayError(f"MLflow at {self.base_url} sent a non-JSON answer to {path}") from exc

    # -- proxied artifacts --

    def list_artifacts(self, path: str) -> list[dict[str, Any]]:
        """Entries directly under ``path`` (relative to the artifacts root): path/is_dir/size."""
        with self._open("GET", _ARTIFACTS, query={"path": path}) as resp:
            doc = json.loads(resp.read() or b"{}")
        return list(doc.get("files", []))

    def download_artifact(self, path: str, dest: Path) -> None:
        with self._open("GET", f"{_ARTIFACTS}/{_quote(path)}") as resp, dest.open("wb") as out:
            shutil.copyfileobj(resp, out, _CHUNK)

    def upload_artifact(self, local: Path, path: str) -> None:
        size = local.stat().st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with local.open("rb") as fh:
            body: Any = fh if size else b""
            with self._open("PUT", f"{_ARTIFACTS}/{_quote(path)}", body=body, headers=headers):
                pass


def _quote(path: str) -> str:
    return urllib.parse.quote(path.strip("/"), safe="/")


def _safe_child(parent: str, entry: str) -> str:
    """The artifact path of a listed entry; refuse names that climb out of ``parent``."""
    rel = entry.rsplit("/", 1)[-1] if "/" in entry else entry
    if rel in ("", ".", "..") or "\\" in rel:
        raise UnsafeInputError(f"MLflow listed an unsafe artifact name {entry!r} under {parent!r}")
    return posixpath.join(parent, rel) if parent else rel


class RestBackend:
    """:class:`~assay.mlflow_access.base.MlflowBackend` over the MLflow REST API."""

    def __init__(self, tracking_uri: str, *, timeout: float = 30.0) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.rest = MlflowRestClient(self.tracking_uri, timeout=timeout)
        self._experiment_id: str | None = None

    def __repr__(self) -> str:
        return f"RestBackend({self.tracking_uri!r})"

    def _call(
        self, what: str, method: str, endpoint: str, payload: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            return self.rest.call(method, endpoint, payload)
        except MlflowRestError as exc:
            raise map_error(exc.error_code, exc.detail, what) from exc

    # -- set-up --

    def initialise(self) -> None:
        self._call("list registered models", "GET", "registered-models/search", {"max_results": 1})
        self._experiment()

    def _experiment(self) -> str:
        if self._experiment_id is not None:
            return self._experiment_id
        try:
            doc = self.rest.call(
                "GET", "experiments/get-by-name", {"experiment_name": ASSAY_EXPERIMENT}
            )
            self._experiment_id = str(doc["experiment"]["experiment_id"])
        except MlflowRestError as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise map_error(exc.error_code, exc.detail, "read experiment") from exc
            try:
                doc = self.rest.call("POST", "experiments/create", {"name": ASSAY_EXPERIMENT})
                self._experiment_id = str(doc["experiment_id"])
            except MlflowRestError as exc2:
                if exc2.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise map_error(exc2.error_code, exc2.detail, "create experiment") from exc2
                doc = self.rest.call(
                    "GET", "experiments/get-by-name", {"experiment_name": ASSAY_EXPERIMENT}
                )
                self._experiment_id = str(doc["experiment"]["experiment_id"])
        return self._experiment_id

    # -- runs and artifacts --

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
        payload: dict[str, Any] = {
            "experiment_id": self._experiment(),
            "start_time": int(time.time() * 1000),
            "tags": [{"key": k, "value": str(v)} for k, v in (tags or {}).items()],
        }
        if run_name:
            payload["run_name"] = run_name
        run = self._call("create run", "POST", "runs/create", payload)["run"]
        run_id = run["info"]["run_id"]
        try:
            if params:
                items = [{"key": k, "value": str(v)} for k, v in params.items()]
                for i in range(0, len(items), 100):
                    self._call(
                        "log params",
                        "POST",
                        "runs/log-batch",
                        {"run_id": run_id, "params": items[i : i + 100]},
                    )
            if local.is_dir():
                uri = self.log_artifact_dir(run_id, local, artifact_path)
            else:
                self.log_artifact_file(run_id, local, artifact_path)
                uri = f"{run['info']['artifact_uri'].rstrip('/')}/{artifact_path.strip('/')}"
        except BaseException:  # an interrupted upload leaves no run RUNNING
            end_quietly(lambda: self.end_run(run_id, "FAILED"), run_id)
            raise
        self.end_run(run_id, "FINISHED")
        return LoggedModel(run_id=run_id, source_uri=uri, artifact_path=artifact_path)

    def get_run(self, run_id: str) -> RunRecord:
        return _run_from_json(
            self._call(f"run {run_id}", "GET", "runs/get", {"run_id": run_id})["run"]
        )

    def running_runs(self, tags: Mapping[str, str]) -> list[RunRecord]:
        out: list[RunRecord] = []
        token: str | None = None
        while True:
            payload: dict[str, Any] = {
                "experiment_ids": [self._experiment()],
                "filter": running_filter(tags),
                "max_results": _PAGE,
            }
            if token:
                payload["page_token"] = token
            doc = self._call("search runs", "POST", "runs/search", payload)
            out.extend(
                r
                for r in map(_run_from_json, doc.get("runs", []))
                if r.status == "RUNNING" and has_tags(r, tags)
            )
            token = doc.get("next_page_token")
            if not token:
                break
        return out

    def end_run(self, run_id: str, status: str = "FAILED") -> None:
        self._call(
            f"end run {run_id}",
            "POST",
            "runs/update",
            {"run_id": run_id, "status": status, "end_time": int(time.time() * 1000)},
        )

    def run_artifact_uri(self, run_id: str) -> str:
        run = self._call(f"run {run_id}", "GET", "runs/get", {"run_id": run_id})["run"]
        return run["info"]["artifact_uri"]

    def _proxied_path(self, uri: str) -> str | None:
        """The artifacts-root-relative path of an ``mlflow-artifacts:`` URI on this server."""
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme != "mlflow-artifacts":
            return None
        if parsed.netloc and parsed.netloc != urllib.parse.urlparse(self.tracking_uri).netloc:
            return None
        return urllib.parse.unquote(parsed.path).strip("/")

    def log_artifact_file(
        self, run_id: str, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> str:
        local = Path(local_path)
        root = self.run_artifact_uri(run_id).rstrip("/")
        sub = "/".join(p for p in ((artifact_path or "").strip("/"), local.name) if p)
        base = self._proxied_path(root)
        if base is None:
            _mlflow_upload(root, local, artifact_path, self.tracking_uri)
        else:
            self.rest.upload_artifact(local, f"{base}/{sub}")
        return f"{root}/{sub}"

    def log_artifact_dir(
        self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> str:
        local = Path(local_dir)
        root = self.run_artifact_uri(run_id).rstrip("/")
        prefix = (artifact_path or "").strip("/")
        base = self._proxied_path(root)
        if base is None:
            _mlflow_upload(root, local, artifact_path, self.tracking_uri)
        else:
            for file in sorted(_walk_files(local)):
                rel = file.relative_to(local).as_posix()
                target = "/".join(p for p in (base, prefix, rel) if p)
                self.rest.upload_artifact(file, target)
        return f"{root}/{prefix}" if prefix else root

    def version_download_uri(self, name: str, version: str | int) -> str:
        v = version_str(version)
        doc = self._call(
            describe(name, v),
            "GET",
            "model-versions/get-download-uri",
            {"name": name, "version": v},
        )
        uri = doc.get("artifact_uri", "")
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme == "runs":
            # runs:/<run_id>/<path>: resolve against the run's artifact root.
            run_id, _, sub = parsed.path.lstrip("/").partition("/")
            uri = self.run_artifact_uri(run_id).rstrip("/") + (f"/{sub}" if sub else "")
        return uri

    def download_version(
        self, name: str, version: str | int, dest_dir: str | os.PathLike[str]
    ) -> Path:
        v = version_str(version)
        doc = self._call(
            describe(name, v),
            "GET",
            "model-versions/get-download-uri",
            {"name": name, "version": v},
        )
        raw_uri = doc.get("artifact_uri", "")
        uri = self.version_download_uri(name, v) if raw_uri.startswith("runs:") else raw_uri
        try:
            return self.download_uri(uri, dest_dir)
        except NotFoundError:
            if not raw_uri.startswith("runs:"):
                raise
        # MLflow 3 resolves runs:/<id>/<path> to a logged model when the run's own artifacts
        # do not hold <path>; let mlflow do that resolution.
        from assay.mlflow_access.embedded import download_with_mlflow

        dest = prepare_dest(dest_dir)
        download_with_mlflow(raw_uri, dest, self.tracking_uri)
        return dest

    def download_uri(self, uri: str, dest_dir: str | os.PathLike[str]) -> Path:
        """Download ``uri`` into ``dest_dir``; a missing artifact raises NotFoundError.

        ``mlflow-artifacts:`` URIs (and ``runs:/`` URIs that resolve to them) go over REST;
        anything else falls back to mlflow's artifact repositories.
        """
        if uri.startswith("runs:"):
            run_id, _, sub = urllib.parse.urlparse(uri).path.lstrip("/").partition("/")
            resolved = self.run_artifact_uri(run_id).rstrip("/") + (f"/{sub}" if sub else "")
            if self._proxied_path(resolved) is not None:
                try:
                    return self.download_uri(resolved, dest_dir)
                except NotFoundError:
                    # MLflow 3 may resolve runs:/<id>/<path> to a logged model instead.
                    shutil.rmtree(dest_dir, ignore_errors=True)
        dest = prepare_dest(dest_dir)
        base = self._proxied_path(uri)
        if base is None:
            from assay.mlflow_access.embedded import download_with_mlflow

            download_with_mlflow(uri, dest, self.tracking_uri)
            return dest
        try:
            entries = list(self._walk_remote(base))
            if not entries:
                # A listing of a file is empty: try the URI as one file.
                self.rest.download_artifact(base, dest / PurePosixPath(base).name)
                return dest
            for rel in entries:
                target = dest.joinpath(*PurePosixPath(rel).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                self.rest.download_artifact(f"{base}/{rel}", target)
        except MlflowRestError as exc:
            raise map_error(exc.error_code, exc.detail, f"download {uri}") from exc
        return dest

    def _walk_remote(self, base: str, rel: str = "") -> Iterator[str]:
        listed = self.rest.list_artifacts(f"{base}/{rel}" if rel else base)
        for entry in sorted(listed, key=lambda e: e.get("path", "")):
            child = _safe_child(rel, str(entry.get("path", "")))
            if entry.get("is_dir"):
                yield from self._walk_remote(base, child)
            else:
                yield child

    # -- registry --

    def ensure_registered_model(self, name: str) -> None:
        try:
            self.rest.call("POST", "registered-models/create", {"name": name})
        except MlflowRestError as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise map_error(exc.error_code, exc.detail, describe(name)) from exc

    def create_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> ModelVersionInfo:
        self.ensure_registered_model(name)
        payload: dict[str, Any] = {"name": name, "source": source}
        if run_id:
            payload["run_id"] = run_id
        if tags:
            payload["tags"] = [{"key": k, "value": str(v)} for k, v in tags.items()]
        if description:
            payload["description"] = description
        doc = self._call(describe(name), "POST", "model-versions/create", payload)
        version = str(doc["model_version"]["version"])
        return wait_ready(lambda: self.get_version(name, version), name, version)

    def delete_version(self, name: str, version: str | int) -> None:
        v = version_str(version)
        self._call(
            describe(name, v), "DELETE", "model-versions/delete", {"name": name, "version": v}
        )

    def get_version(self, name: str, version: str | int) -> ModelVersionInfo:
        v = version_str(version)
        doc = self._call(
            describe(name, v), "GET", "model-versions/get", {"name": name, "version": v}
        )
        return _from_json(doc["model_version"])

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        by_version = aliases_by_version(self.aliases(name))
        out: list[ModelVersionInfo] = []
        token: str | None = None
        while True:
            doc = self._call(
                f"versions of {describe(name)}",
                "GET",
                "model-versions/search",
                {"filter": name_filter(name), "max_results": _PAGE, "page_token": token},
            )
            out.extend(
                with_aliases(_from_json(mv), by_version)
                for mv in doc.get("model_versions", [])
                if mv["name"] == name
            )
            token = doc.get("next_page_token")
            if not token:
                break
        return sorted(out, key=lambda mv: int(mv.version))

    def list_models(self) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            doc = self._call(
                "list registered models",
                "GET",
                "registered-models/search",
                {"max_results": _PAGE, "page_token": token},
            )
            names.extend(rm["name"] for rm in doc.get("registered_models", []))
            token = doc.get("next_page_token")
            if not token:
                break
        return sorted(names)

    def _registered_model(self, name: str) -> dict[str, Any]:
        return self._call(describe(name), "GET", "registered-models/get", {"name": name})[
            "registered_model"
        ]

    def aliases(self, name: str) -> dict[str, str]:
        rm = self._registered_model(name)
        return {a["alias"]: str(a["version"]) for a in rm.get("aliases", [])}

    def get_alias(self, name: str, alias: str) -> str | None:
        return self.aliases(name).get(alias)

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        v = version_str(version)
        self._call(
            describe(name, v),
            "POST",
            "registered-models/alias",
            {"name": name, "alias": alias, "version": v},
        )

    def delete_alias(self, name: str, alias: str) -> None:
        if alias not in self.aliases(name):
            return
        self._call(
            f"alias '{alias}' of {describe(name)}",
            "DELETE",
            "registered-models/alias",
            {"name": name, "alias": alias},
        )

    def set_version_tag(self, name: str, version: str | int, key: str, value: str) -> None:
        v = version_str(version)
        self._call(
            describe(name, v),
            "POST",
            "model-versions/set-tag",
            {"name": name, "version": v, "key": key, "value": str(value)},
        )

    def delete_version_tag(self, name: str, version: str | int, key: str) -> None:
        v = version_str(version)
        if key not in self.get_version(name, v).tags:
            return
        self._call(
            describe(name, v),
            "DELETE",
            "model-versions/delete-tag",
            {"name": name, "version": v, "key": key},
        )


def _from_json(mv: Mapping[str, Any]) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=mv["name"],
        version=str(mv["version"]),
        source=mv.get("source", ""),
        run_id=mv.get("run_id") or None,
        status=mv.get("status", ""),
        tags={t["key"]: t.get("value", "") for t in mv.get("tags", [])},
        aliases=sorted(mv.get("aliases", [])),
        created_at=ms_to_datetime(mv.get("creation_timestamp")),
        description=mv.get("description", "") or "",
    )


def _run_from_json(run: Any) -> RunRecord:
    """A run of a ``runs/get`` or ``runs/search`` answer; FormatError unless it names its run id
    and status (tags that are not ``{"key": str, "value": str}`` objects are left out)."""
    info = run.get("info") if isinstance(run, Mapping) else None
    if not isinstance(info, Mapping):
        raise FormatError("MLflow answered a run without its info")
    run_id, status = info.get("run_id"), info.get("status")
    if not (isinstance(run_id, str) and run_id and isinstance(status, str)):
        raise FormatError("MLflow answered a run without a run id or status")
    data = run.get("data")
    raw = data.get("tags") if isinstance(data, Mapping) else None
    tags = {
        t["key"]: t["value"]
        for t in (raw if isinstance(raw, list) else [])
        if isinstance(t, Mapping)
        and isinstance(t.get("key"), str)
        and isinstance(t.get("value"), str)
    }
    try:
        started = ms_to_datetime(info.get("start_time"))
    except (TypeError, ValueError, OverflowError, OSError):
        started = None  # informational only
    return RunRecord(run_id=run_id, status=status, tags=tags, start_time=started)


def _walk_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fname in filenames:
            path = Path(dirpath) / fname
            if path.is_symlink():
                raise UnsafeInputError(f"refusing to upload symlink {path}")
            yield path


def _mlflow_upload(root: str, local: Path, artifact_path: str | None, tracking_uri: str) -> None:
    """Upload through mlflow's artifact repository for non-proxied artifact stores."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        repo = get_artifact_repository(root, tracking_uri=tracking_uri, registry_uri=tracking_uri)
        if local.is_dir():
            repo.log_artifacts(str(local), artifact_path)
        else:
            repo.log_artifact(str(local), artifact_path)
    except MlflowException as exc:
        raise map_error(exc.error_code, exc.message, f"upload to {root}") from exc

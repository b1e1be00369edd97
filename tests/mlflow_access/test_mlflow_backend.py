"""MlflowBackend against real MLflow: embedded sqlite, and a real ``mlflow server`` over REST."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from assay.core.errors import AssayError, ConfigError, NotFoundError, RefusedError
from assay.core.settings import Settings
from assay.mlflow_access import embedded as mlflow_backend
from assay.mlflow_access import rest as mlflow_rest
from assay.mlflow_access.base import (
    MLFLOW_ADDED_FILES,
    MlflowBackend,
    open_backend,
)
from assay.mlflow_access.embedded import EmbeddedBackend
from assay.mlflow_access.rest import RestBackend

server = [pytest.mark.server, pytest.mark.slow]


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sk_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sklearn model saved as an MLflow model folder."""
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(x, y)
    path = tmp_path_factory.mktemp("sk") / "model"
    mlflow.sklearn.save_model(model, path)
    return path


@pytest.fixture
def weights_dir(tmp_path: Path) -> Path:
    """A plain folder of weights, nested, with an empty file."""
    root = tmp_path / "weights"
    (root / "sub").mkdir(parents=True)
    (root / "w.bin").write_bytes(os.urandom(4096))
    (root / "sub" / "config.json").write_text('{"layers": 2}')
    (root / "empty").write_bytes(b"")
    return root


@pytest.fixture
def embedded(assay_home: Path) -> EmbeddedBackend:
    backend = open_backend(Settings.from_env())
    assert isinstance(backend, EmbeddedBackend)
    backend.initialise()
    return backend


@pytest.fixture
def rest(assay_home: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> RestBackend:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    backend = open_backend(Settings.from_env())
    assert isinstance(backend, RestBackend)
    backend.initialise()
    return backend


@pytest.fixture(params=["embedded", pytest.param("rest", marks=server)])
def backend(request: pytest.FixtureRequest) -> MlflowBackend:
    return request.getfixturevalue(request.param)


@pytest.fixture
def name() -> str:
    """A model name unique across the session (the server is shared)."""
    return f"churn-{uuid.uuid4().hex[:8]}"


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def register(backend: MlflowBackend, name: str, folder: Path, **kwargs):
    logged = backend.log_model_dir(folder, run_name="test")
    return backend.create_version(name, logged.source_uri, run_id=logged.run_id, **kwargs)


# --- choosing a backend ----------------------------------------------------------------------


def test_open_backend_picks_by_uri(assay_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    assert isinstance(open_backend(settings), EmbeddedBackend)
    assert settings.tracking_uri == f"sqlite:///{assay_home.resolve() / 'mlflow.db'}"
    for uri in ("http://127.0.0.1:5000", "https://mlflow.example.com/"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        backend = open_backend(Settings.from_env())
        assert isinstance(backend, RestBackend)
        assert isinstance(backend, MlflowBackend)


def test_embedded_needs_initialise(assay_home: Path) -> None:
    backend = open_backend(Settings.from_env())
    with pytest.raises(ConfigError, match="assay init"):
        backend.list_models()


def test_initialise_is_idempotent_and_keeps_artifacts_home(
    assay_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_backend(Settings.from_env())
    backend.initialise()
    backend.initialise()
    logged = backend.log_model_dir(weights_dir)
    assert logged.source_uri.startswith((assay_home.resolve() / "artifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()


def test_unreachable_server(assay_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow_server as server_helper

    url = f"http://127.0.0.1:{server_helper.free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    backend = open_backend(Settings.from_env())
    with pytest.raises(AssayError, match=f"cannot reach MLflow at {url}"):
        backend.get_alias("churn", "production")


# --- register, read, download ----------------------------------------------------------------


def test_register_and_download_mlflow_model(
    backend: MlflowBackend, name: str, sk_model_dir: Path, tmp_path: Path
) -> None:
    logged = backend.log_model_dir(
        sk_model_dir, run_name="ci", params={"lr": "0.1"}, tags={"git": "abc"}
    )
    assert logged.run_id and logged.source_uri.endswith("/model")
    mv = backend.create_version(
        name,
        logged.source_uri,
        run_id=logged.run_id,
        tags={"assay.state": "registered"},
        description="first",
    )
    assert (mv.name, mv.version, mv.status) == (name, "1", "READY")
    assert mv.run_id == logged.run_id and mv.source == logged.source_uri
    assert mv.tags == {"assay.state": "registered"} and mv.description == "first"
    assert mv.created_at is not None and mv.created_at.tzinfo is not None
    assert backend.get_version(name, 1) == mv

    dest = backend.download_version(name, "1", tmp_path / "dl")
    assert tree(dest) == tree(sk_model_dir)
    assert not (set(tree(dest)) & MLFLOW_ADDED_FILES)
    assert backend.version_download_uri(name, 1).rstrip("/").endswith("model")


def test_register_plain_weights_and_single_file(
    backend: MlflowBackend, name: str, weights_dir: Path, tmp_path: Path
) -> None:
    mv = register(backend, name, weights_dir)
    assert tree(backend.download_version(name, mv.version, tmp_path / "a")) == tree(weights_dir)

    logged = backend.log_model_dir(weights_dir / "w.bin", artifact_path="weights")
    mv2 = backend.create_version(name, logged.source_uri, run_id=logged.run_id)
    assert mv2.version == "2"
    got = tree(backend.download_version(name, 2, tmp_path / "b"))
    assert got == {"w.bin": tree(weights_dir)["w.bin"]}


def test_signature_bundle_beside_model(
    backend: MlflowBackend, name: str, weights_dir: Path, tmp_path: Path
) -> None:
    logged = backend.log_model_dir(weights_dir)
    bundle = tmp_path / "model.sig"
    bundle.write_text('{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}')
    uri = backend.log_artifact_file(logged.run_id, bundle, "assay")
    assert uri == f"{backend.run_artifact_uri(logged.run_id).rstrip('/')}/assay/model.sig"
    mv = backend.create_version(name, logged.source_uri, run_id=logged.run_id)
    # The bundle is in the run, not inside the registered model folder.
    assert tree(backend.download_version(name, mv.version, tmp_path / "m")) == tree(weights_dir)
    got = backend.download_uri(uri.rsplit("/", 1)[0], tmp_path / "sig")
    assert (got / "model.sig").read_bytes() == bundle.read_bytes()


def test_download_refuses_non_empty_destination(
    backend: MlflowBackend, name: str, weights_dir: Path, tmp_path: Path
) -> None:
    mv = register(backend, name, weights_dir)
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "x").write_text("x")
    with pytest.raises(RefusedError, match="not empty"):
        backend.download_version(name, mv.version, dest)


def test_list_versions_and_models(
    backend: MlflowBackend, name: str, weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = backend.log_model_dir(weights_dir)
    for _ in range(5):
        backend.create_version(name, logged.source_uri, run_id=logged.run_id)
    other = f"{name}-other"
    backend.create_version(other, logged.source_uri, run_id=logged.run_id)
    backend.set_alias(name, "production", 4)
    # Force pagination.
    monkeypatch.setattr(mlflow_backend, "_PAGE", 2)
    monkeypatch.setattr(mlflow_rest, "_PAGE", 2)
    versions = backend.list_versions(name)
    assert [mv.version for mv in versions] == ["1", "2", "3", "4", "5"]
    assert {mv.name for mv in versions} == {name}
    assert versions[3].aliases == ["production"] and versions[0].aliases == []
    models = backend.list_models()
    assert {name, other} <= set(models) and models == sorted(models)
    backend.ensure_registered_model(name)  # idempotent
    backend.ensure_registered_model(f"{name}-empty")
    assert backend.list_versions(f"{name}-empty") == []


def test_delete_version(backend: MlflowBackend, name: str, weights_dir: Path) -> None:
    mv = register(backend, name, weights_dir)
    backend.delete_version(name, mv.version)
    with pytest.raises(NotFoundError, match=f"model '{name}' has no version 1"):
        backend.get_version(name, "1")
    assert backend.list_versions(name) == []


# --- aliases and tags ------------------------------------------------------------------------


def test_alias_set_get_move_delete(backend: MlflowBackend, name: str, weights_dir: Path) -> None:
    logged = backend.log_model_dir(weights_dir)
    v1 = backend.create_version(name, logged.source_uri, run_id=logged.run_id)
    v2 = backend.create_version(name, logged.source_uri, run_id=logged.run_id)
    assert backend.get_alias(name, "production") is None
    assert backend.aliases(name) == {}

    backend.set_alias(name, "production", v1.version)
    backend.set_alias(name, "staging", v2.version)
    assert backend.get_alias(name, "production") == "1"
    assert backend.aliases(name) == {"production": "1", "staging": "2"}
    assert backend.get_version(name, 1).aliases == ["production"]

    backend.set_alias(name, "production", int(v2.version))  # move
    assert backend.get_alias(name, "production") == "2"
    assert backend.get_version(name, 2).aliases == ["production", "staging"]
    assert backend.get_version(name, 1).aliases == []

    backend.delete_alias(name, "production")
    backend.delete_alias(name, "production")  # no error the second time
    assert backend.aliases(name) == {"staging": "2"}


def test_alias_errors(backend: MlflowBackend, name: str, weights_dir: Path) -> None:
    register(backend, name, weights_dir)
    with pytest.raises(NotFoundError, match=f"model '{name}' has no version 7"):
        backend.set_alias(name, "production", 7)
    with pytest.raises(NotFoundError, match="no registered model named 'nope-x'"):
        backend.get_alias("nope-x", "production")
    with pytest.raises(NotFoundError, match="no registered model named 'nope-x'"):
        backend.aliases("nope-x")
    with pytest.raises(AssayError, match="reserved"):
        backend.set_alias(name, "latest", 1)


def test_version_tags(backend: MlflowBackend, name: str, weights_dir: Path) -> None:
    mv = register(backend, name, weights_dir, tags={"team": "risk"})
    backend.set_version_tag(name, mv.version, "assay.state", "registered")
    backend.set_version_tag(name, mv.version, "assay.state", "known-good")
    backend.set_version_tag(name, mv.version, "assay.manifest", "sha256:" + "0" * 64)
    assert backend.get_version(name, mv.version).tags == {
        "team": "risk",
        "assay.state": "known-good",
        "assay.manifest": "sha256:" + "0" * 64,
    }
    backend.delete_version_tag(name, mv.version, "assay.state")
    backend.delete_version_tag(name, mv.version, "never-set")
    assert "assay.state" not in backend.get_version(name, mv.version).tags
    with pytest.raises(NotFoundError, match="has no version 9"):
        backend.set_version_tag(name, 9, "k", "v")


def test_unknown_things_are_not_found(backend: MlflowBackend, name: str) -> None:
    with pytest.raises(NotFoundError, match="has no version 1"):
        backend.get_version("nope-y", 1)
    with pytest.raises(NotFoundError, match="no registered model named 'nope-y'"):
        backend.list_versions("nope-y")
    with pytest.raises(NotFoundError, match="version must be a number"):
        backend.get_version("nope-y", "latest")
    with pytest.raises(NotFoundError):
        backend.download_version("nope-y", 1, "/nonexistent/never-created")
    with pytest.raises(NotFoundError, match="no such file"):
        backend.log_model_dir("/nonexistent/model")


# --- concurrency -----------------------------------------------------------------------------

CREATE_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from assay.core.settings import Settings
    from assay.mlflow_access.base import open_backend

    name, source, run_id, go = sys.argv[1:5]
    backend = open_backend(Settings.from_env())
    backend.list_models()  # warm up (imports mlflow in embedded mode)
    open(go + "." + str(os.getpid()), "w").close()
    while not os.path.exists(go):
        time.sleep(0.005)
    print(backend.create_version(name, source, run_id=run_id).version)
    """
)


def _concurrent_create(backend: MlflowBackend, name: str, weights: Path, tmp: Path) -> list[int]:
    logged = backend.log_model_dir(weights)
    go = tmp / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE_SCRIPT, name, logged.source_uri, logged.run_id, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp.glob("go.*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    versions = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        versions.append(int(out.strip().splitlines()[-1]))
    return versions


@pytest.mark.slow
def test_concurrent_version_creation_sqlite(
    embedded: EmbeddedBackend, name: str, weights_dir: Path, tmp_path: Path
) -> None:
    versions = _concurrent_create(embedded, name, weights_dir, tmp_path)
    assert sorted(versions) == [1, 2, 3, 4]
    assert [mv.version for mv in embedded.list_versions(name)] == ["1", "2", "3", "4"]


@pytest.mark.server
@pytest.mark.slow
def test_concurrent_version_creation_server(
    rest: RestBackend, name: str, weights_dir: Path, tmp_path: Path
) -> None:
    versions = _concurrent_create(rest, name, weights_dir, tmp_path)
    assert sorted(versions) == [1, 2, 3, 4]
    assert [mv.version for mv in rest.list_versions(name)] == ["1", "2", "3", "4"]


# --- incident-path latency -------------------------------------------------------------------

ALIAS_SCRIPT = textwrap.dedent(
    """
    import time
    t0 = time.perf_counter()
    import json, sys
    from assay.core.settings import Settings
    from assay.mlflow_access.base import open_backend

    version = open_backend(Settings.from_env()).get_alias(sys.argv[1], "production")
    print(json.dumps({"version": version, "seconds": time.perf_counter() - t0,
                      "mlflow_imported": "mlflow" in sys.modules}))
    """
)


def _time_get_alias(name: str) -> dict:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", ALIAS_SCRIPT, name],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    return result


def _report(capsys: pytest.CaptureFixture[str], label: str, result: dict) -> None:
    with capsys.disabled():
        print(
            f"\n[timing] {label}: get_alias in a fresh process: "
            f"{result['seconds']:.3f} s in-process, {result['process_seconds']:.3f} s wall "
            f"(mlflow imported: {result['mlflow_imported']})"
        )


@pytest.mark.server
@pytest.mark.slow
def test_rest_get_alias_fresh_process_is_fast_and_mlflow_free(
    rest: RestBackend, name: str, weights_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mv = register(rest, name, weights_dir)
    rest.set_alias(name, "production", mv.version)
    result = _time_get_alias(name)
    _report(capsys, "RestBackend", result)
    assert result["version"] == "1"
    assert result["mlflow_imported"] is False
    assert result["seconds"] < 2.0


@pytest.mark.slow
def test_embedded_get_alias_fresh_process(
    embedded: EmbeddedBackend, name: str, weights_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mv = register(embedded, name, weights_dir)
    embedded.set_alias(name, "production", mv.version)
    result = _time_get_alias(name)
    _report(capsys, "EmbeddedBackend (sqlite)", result)
    assert result["version"] == "1"


def test_download_runs_uri_and_missing_artifact(
    backend: MlflowBackend, weights_dir: Path, tmp_path: Path
) -> None:
    logged = backend.log_model_dir(weights_dir)
    got = backend.download_uri(f"runs:/{logged.run_id}/model", tmp_path / "r")
    assert tree(got) == tree(weights_dir)
    missing = logged.source_uri.replace("/model", "/nothing-here")
    with pytest.raises(NotFoundError):
        backend.download_uri(missing, tmp_path / "m")


# --- the read-only sqlite3 fast path of the embedded backend --------------------------------


def test_sqlite_fast_path_reads_what_mlflowclient_reads(
    embedded: EmbeddedBackend, name: str, weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Versions, tags, aliases and deletions read through sqlite3 equal MlflowClient's answers."""
    from assay.mlflow_access.sqlite_reader import open_reader

    for i in range(3):
        register(embedded, name, weights_dir, tags={"assay.state": f"s{i}"})
    embedded.set_alias(name, "production", 2)
    embedded.set_alias(name, "staging", 3)
    embedded.set_version_tag(name, 3, "k", "")
    embedded.delete_version(name, 1)

    fast = open_backend(Settings.from_env())
    assert fast._reader is not None
    slow = open_backend(Settings.from_env())
    slow._reader_obj = False  # force MlflowClient
    assert slow._reader is None
    assert fast.list_versions(name) == slow.list_versions(name)
    assert [v.version for v in fast.list_versions(name)] == ["2", "3"]
    assert fast.get_version(name, 3) == slow.get_version(name, 3)
    assert fast.get_version(name, 3).tags == {"assay.state": "s2", "k": ""}
    assert fast.aliases(name) == slow.aliases(name) == {"production": "2", "staging": "3"}
    assert name in fast.list_models() and fast.list_models() == slow.list_models()
    with pytest.raises(NotFoundError, match="has no version 1"):
        fast.get_version(name, 1)  # deleted versions are invisible, as in MLflow
    # the fast path sees MLflow's later writes at once (read-back after an alias move)
    embedded.set_alias(name, "production", 3)
    assert fast.get_alias(name, "production") == "3"

    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert open_reader(embedded.tracking_uri) is None
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES")
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-a")
    assert open_reader(embedded.tracking_uri) is None


def test_sqlite_fast_path_steps_aside_for_an_unknown_schema(tmp_path: Path) -> None:
    import sqlite3

    from assay.mlflow_access.sqlite_reader import open_reader

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE registered_models (name TEXT)")  # no workspace column etc.
    assert open_reader(f"sqlite:///{db}") is None
    assert open_reader(f"sqlite:///{tmp_path / 'missing.db'}") is None
    assert open_reader("http://127.0.0.1:5000") is None


# --- the registry-only client of the embedded backend ---------------------------------------


def _outcome(fn, *args):
    """What a call gave: its value, or its exception's type, MLflow error code and message."""
    from mlflow.exceptions import MlflowException

    try:
        return ("ok", fn(*args))
    except MlflowException as exc:
        return ("error", type(exc).__name__, exc.error_code, exc.message)


def test_registry_calls_skip_the_tracking_store_and_match_mlflowclient(
    embedded: EmbeddedBackend, name: str, weights_dir: Path
) -> None:
    """Tags and aliases go through MLflow's registry client alone, with MlflowClient's checks."""
    import mlflow

    register(embedded, name, weights_dir)
    prompt = f"prompt-{uuid.uuid4().hex[:8]}"
    full = mlflow.MlflowClient(tracking_uri=embedded.tracking_uri)
    full.create_registered_model(prompt)
    full.set_registered_model_tag(prompt, "mlflow.prompt.is_prompt", "true")  # MLflow's prompt mark

    backend = open_backend(Settings.from_env())
    backend._reader_obj = False  # reads through MLflow too
    backend.set_version_tag(name, 1, "assay.state", "known-good")
    backend.set_alias(name, "production", 1)
    assert backend.get_alias(name, "production") == "1"
    assert backend.get_version(name, 1).tags["assay.state"] == "known-good"
    assert [v.version for v in backend.list_versions(name)] == ["1"]
    backend.delete_alias(name, "production")
    backend.delete_version_tag(name, 1, "assay.state")
    assert name in backend.list_models()
    assert backend.version_download_uri(name, 1).startswith("file:")
    assert backend._client_obj is None  # no MlflowClient, no tracking store

    view = backend._registry
    for method, args in (
        ("get_model_version", (name, "1")),
        ("get_registered_model", (prompt,)),  # a prompt is "not found" to model calls
        ("set_registered_model_alias", (prompt, "a", "1")),
        ("set_registered_model_alias", (name, "latest", "1")),  # reserved alias
        ("set_registered_model_alias", (name, "bad alias!", "1")),
        ("set_registered_model_alias", ("nope-z", "a", "1")),
        ("delete_registered_model_alias", (name, "never-set")),
        ("set_model_version_tag", (name, "9", "k", "v")),
        ("set_model_version_tag", (prompt, "1", "k", "v")),
        ("delete_model_version_tag", (name, "1", "never-set")),
        ("get_model_version_download_uri", (prompt, "1")),
    ):
        got, want = _outcome(getattr(view, method), *args), _outcome(getattr(full, method), *args)
        if got[0] == "ok" and method == "get_model_version":
            got, want = ("ok", dict(got[1])), ("ok", dict(want[1]))
        assert got == want, method
    assert backend._client_obj is None
    with pytest.raises(NotFoundError, match=f"no registered model named '{prompt}'"):
        backend.set_alias(prompt, "production", 1)  # mapped as every MLflow error is

    # anything else the view is asked for comes from a full MlflowClient, built then
    assert view.get_experiment_by_name("assay") is not None
    assert backend._client_obj is not None
    with pytest.raises(AttributeError):
        view.__nonexistent__  # noqa: B018

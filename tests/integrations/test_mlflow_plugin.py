"""The ``models:`` artifact-repository override verifies what ``mlflow.pyfunc.load_model`` loads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.core.errors import AssayError, IntegrityError
from assay.integrations import mlflow_plugin
from assay.integrations.mlflow_plugin import (
    ModelIntegrityError,
    VerifyingModelsArtifactRepository,
    enforcement_mode,
    get_verifier,
    set_verifier,
)
from assay.mlflow_access.base import MLFLOW_ADDED_FILES


@pytest.fixture(scope="module")
def registry_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A sqlite registry holding sklearn model ``iris`` version 1 (alias ``production``)."""
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("plugin")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("plugin", artifact_location=(root / "art").as_uri())
        x, y = load_iris(return_X_y=True)
        model = LogisticRegression(max_iter=300).fit(x, y)
        with mlflow.start_run(experiment_id=exp):
            mlflow.sklearn.log_model(model, name="model", registered_model_name="iris")
        mlflow.MlflowClient().set_registered_model_alias("iris", "production", "1")
        yield uri
    finally:
        mlflow.set_tracking_uri(None)
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture
def calls(registry_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """Install a passing verifier that records its calls; restore afterwards."""
    import mlflow

    mlflow.set_tracking_uri(registry_uri)
    monkeypatch.delenv("ASSAY_ENFORCE", raising=False)
    seen: list = []

    def verifier(name: str, version: str, local_path: str) -> None:
        seen.append((name, version, sorted(os.listdir(local_path))))

    previous = set_verifier(verifier)
    yield seen
    set_verifier(previous)


def failing(name: str, version: str, local_path: str) -> None:
    raise IntegrityError(f"model.skops of {name} v{version} does not match its manifest")


def test_entry_point_is_declared_and_picked_up_by_mlflow(calls: list) -> None:
    from importlib.metadata import entry_points

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    eps = [ep for ep in entry_points(group="mlflow.artifact_repository") if ep.name == "models"]
    assert [ep.value for ep in eps] == [
        "assay.integrations.mlflow_plugin:VerifyingModelsArtifactRepository"
    ]
    repo = get_artifact_repository("models:/iris/1")
    assert type(repo) is VerifyingModelsArtifactRepository
    assert (repo.model_name, str(repo.model_version)) == ("iris", "1")


@pytest.mark.slow
@pytest.mark.parametrize("first", ["mlflow", "assay.integrations.mlflow_plugin"])
def test_entry_point_registration_in_a_fresh_process(first: str) -> None:
    # Whichever is imported first, MLflow maps models: to our class without a warning.
    code = (
        f"import {first}\n"
        "from mlflow.store.artifact.artifact_repository_registry import "
        "_artifact_repository_registry as r\n"
        "print(r.get_registered_artifact_repositories()['models'].__qualname__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "VerifyingModelsArtifactRepository"


def test_load_model_passes_when_verifier_passes(calls: list) -> None:
    import mlflow

    model = mlflow.pyfunc.load_model("models:/iris/1")
    assert model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]
    assert len(calls) == 1
    name, version, files = calls[0]
    assert (name, version) == ("iris", "1")
    assert "MLmodel" in files and "model.skops" in files
    # MLflow adds this file to what it downloads; manifests must leave it out.
    assert set(files) >= MLFLOW_ADDED_FILES


def test_the_verified_bytes_are_a_private_copy_not_the_store_folder(
    registry_uri: str, calls: list
) -> None:
    """A local artifact store hands out its own folder; a writer of the store who swaps a file
    right after the check must not change what loads (the review's TOCTOU finding)."""
    import mlflow

    root = Path(registry_uri.removeprefix("sqlite:///")).parent / "art"
    (stored,) = root.rglob("model.skops")
    original = stored.read_bytes()
    checked: list[str] = []

    def verifier_then_attacker(name: str, version: str, local_path: str) -> None:
        checked.append(local_path)
        stored.write_bytes(b"swapped after the check")  # the attacker's write

    set_verifier(verifier_then_attacker)
    try:
        model = mlflow.pyfunc.load_model("models:/iris/1")
        assert model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]
    finally:
        stored.write_bytes(original)
    (local,) = checked
    assert not Path(local).resolve().is_relative_to(root.resolve())
    assert (Path(local) / "model.skops").read_bytes() == original


def test_load_model_by_alias_verifies_resolved_version(calls: list) -> None:
    import mlflow.sklearn

    mlflow.sklearn.load_model("models:/iris@production")
    assert [c[:2] for c in calls] == [("iris", "1")]


def test_load_model_fails_when_verifier_raises(calls: list) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    set_verifier(failing)
    with pytest.raises(ModelIntegrityError) as info:
        mlflow.pyfunc.load_model("models:/iris/1")
    err = info.value
    assert isinstance(err, IntegrityError) and isinstance(err, MlflowException)
    assert isinstance(err, AssayError) and err.exit_code == 3
    assert (
        str(err)
        == err.message
        == (
            "models:/iris/1 failed assay verification: "
            "model.skops of iris v1 does not match its manifest"
        )
    )
    assert err.error_code == "INVALID_STATE"
    assert isinstance(err.__cause__, IntegrityError)


def test_any_verifier_exception_refuses(calls: list) -> None:
    import mlflow

    def broken(name: str, version: str, local_path: str) -> None:
        raise KeyError("no manifest")

    set_verifier(broken)
    with pytest.raises(ModelIntegrityError, match="no manifest"):
        mlflow.pyfunc.load_model("models:/iris@production")


def test_warn_mode_loads_and_logs(
    calls: list, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow

    monkeypatch.setenv("ASSAY_ENFORCE", "warn")
    set_verifier(failing)
    with caplog.at_level(logging.WARNING, logger="assay.integrations.mlflow_plugin"):
        model = mlflow.pyfunc.load_model("models:/iris/1")
    assert model is not None
    assert "failed assay verification" in caplog.text


def test_off_mode_skips_verification(calls: list, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("ASSAY_ENFORCE", "off")
    mlflow.pyfunc.load_model("models:/iris/1")
    assert calls == []


def test_mode_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSAY_ENFORCE", raising=False)
    assert enforcement_mode() == "enforce"
    for raw, mode in [("WARN", "warn"), (" off ", "off"), ("bogus", "enforce"), ("", "enforce")]:
        monkeypatch.setenv("ASSAY_ENFORCE", raw)
        assert enforcement_mode() == mode


def test_sub_path_download_verifies_the_whole_version(calls: list, tmp_path: Path) -> None:
    import mlflow

    set_verifier(None)
    seen: list = []
    set_verifier(lambda n, v, p: seen.append(sorted(os.listdir(p))))
    local = mlflow.artifacts.download_artifacts("models:/iris/1/MLmodel", dst_path=str(tmp_path))
    assert Path(local) == tmp_path / "MLmodel" and Path(local).is_file()
    assert len(seen) == 1 and "model.skops" in seen[0]

    set_verifier(failing)
    with pytest.raises(ModelIntegrityError):
        mlflow.artifacts.download_artifacts("models:/iris/1/MLmodel", dst_path=str(tmp_path / "b"))


def test_default_verifier_is_looked_up_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = set_verifier(None)
    try:
        monkeypatch.setitem(sys.modules, "assay.registry.enforcement", None)
        assert get_verifier() is None

        fake = types.ModuleType("assay.registry.enforcement")

        def verify_download(name: str, version: str, local_path: str) -> None:
            return None

        fake.verify_download = verify_download  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "assay.registry.enforcement", fake)
        assert get_verifier() is verify_download
    finally:
        set_verifier(previous)


def test_no_verifier_installed_refuses_unless_warn(
    calls: list, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail closed: without a verifier nothing registered loads, unless ASSAY_ENFORCE=warn."""
    import mlflow

    set_verifier(None)
    monkeypatch.setitem(sys.modules, "assay.registry.enforcement", None)
    with pytest.raises(ModelIntegrityError, match="verifier is not installed"):
        mlflow.pyfunc.load_model("models:/iris/1")
    monkeypatch.setenv("ASSAY_ENFORCE", "warn")
    monkeypatch.setattr(mlflow_plugin, "_warned_missing", False)
    with caplog.at_level(logging.WARNING, logger="assay.integrations.mlflow_plugin"):
        mlflow.pyfunc.load_model("models:/iris/1")
    assert "no verifier installed" in caplog.text


@pytest.mark.server
@pytest.mark.slow
def test_load_model_through_server_is_verified(
    mlflow_server: str, calls: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from assay.mlflow_access.rest import RestBackend

    x, y = load_iris(return_X_y=True)
    mlflow.sklearn.save_model(LogisticRegression(max_iter=300).fit(x, y), tmp_path / "m")
    backend = RestBackend(mlflow_server)
    logged = backend.log_model_dir(tmp_path / "m")
    mv = backend.create_version("iris-served", logged.source_uri, run_id=logged.run_id)
    mlflow.set_tracking_uri(mlflow_server)
    try:
        model = mlflow.pyfunc.load_model(f"models:/iris-served/{mv.version}")
        assert model.predict(x[:1]).tolist() == [0]
        assert [c[:2] for c in calls] == [("iris-served", mv.version)]
        set_verifier(failing)
        with pytest.raises(ModelIntegrityError):
            mlflow.pyfunc.load_model(f"models:/iris-served/{mv.version}")
    finally:
        mlflow.set_tracking_uri(None)

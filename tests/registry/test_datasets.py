"""Datasets: versions hashed, signed, stored in MLflow's artifact store, listed, shown, verified."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.core.errors import AssayError, IntegrityError, NotFoundError
from assay.core.refs import DatasetRef
from assay.core.settings import Settings
from assay.mlflow_access.artifacts import local_path_of
from assay.registry.datasets import list_datasets, register_dataset, show_dataset
from assay.registry.facade import Registry
from assay.registry.uri_verify import verify_uri

CLEARED = ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    home = tmp_path_factory.mktemp("datasets") / "home"
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(home))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        Registry.initialise(Settings.from_env())
        yield Registry.open(Settings.from_env())


def make_data(folder: Path, rows: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(rows)))
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "labels.txt").write_text("0\n1\n")
    return folder


def store_folder(registry: Registry, name: str, version: str) -> Path:
    record = show_dataset(registry, DatasetRef(name, version))
    path = local_path_of(record.uri or "")
    assert path is not None and path.is_dir()
    return path


def test_versions_are_numbered_listed_and_shown(registry: Registry, tmp_path: Path) -> None:
    size = registry.audit.tree_size()
    v1 = register_dataset(registry, "customers", make_data(tmp_path / "a", 10))
    v2 = register_dataset(registry, "customers", make_data(tmp_path / "b", 20))
    other = register_dataset(registry, "orders", make_data(tmp_path / "c", 5))
    assert (v1.version, v2.version, other.version) == ("1", "2", "1")
    assert v1.ref == "dataset:customers@1"
    assert v1.manifest_root != v2.manifest_root
    assert v1.key_id and v1.state == "registered" and v1.status == "complete"
    assert registry.audit.tree_size() == size + 3
    assert registry.audit_events(limit=1)[-1]["action"] == "dataset.register"

    assert [r.ref for r in list_datasets(registry, "customers")] == [
        "dataset:customers@1",
        "dataset:customers@2",
    ]
    assert {r.name for r in list_datasets(registry)} >= {"customers", "orders"}
    assert show_dataset(registry, DatasetRef("customers", None)).version == "2"
    assert show_dataset(registry, DatasetRef("customers", "1")).manifest_root == v1.manifest_root

    for uri in ("dataset:customers@1", "dataset:customers@2", "dataset:customers@latest"):
        report = verify_uri(registry, uri)
        assert report.ok, report.summary()
        assert report.files == 2


def test_single_file_dataset(registry: Registry, tmp_path: Path) -> None:
    f = tmp_path / "table.parquet"
    f.write_bytes(b"PAR1" + bytes(range(256)) * 4)
    record = register_dataset(registry, "single-file", f)
    assert verify_uri(registry, f"dataset:single-file@{record.version}").ok


def test_tampered_dataset_fails_verification(registry: Registry, tmp_path: Path) -> None:
    record = register_dataset(registry, "poisoned", make_data(tmp_path / "a", 50))
    folder = store_folder(registry, "poisoned", record.version)
    with (folder / "train.csv").open("a") as fh:
        fh.write("999,1\n")  # a poisoned row appended in the artifact store
    report = verify_uri(registry, f"dataset:poisoned@{record.version}")
    assert not report.ok
    assert report.modified == ["train.csv"]
    shutil.rmtree(folder)
    with pytest.raises(IntegrityError, match="gone from the artifact store"):
        verify_uri(registry, f"dataset:poisoned@{record.version}")


def test_bad_input(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        register_dataset(registry, "nothing", tmp_path / "missing")
    with pytest.raises(AssayError, match="invalid dataset name"):
        register_dataset(registry, "bad name!", make_data(tmp_path / "a", 1))
    with pytest.raises(NotFoundError, match="no dataset named 'unknown'"):
        show_dataset(registry, DatasetRef("unknown", None))
    register_dataset(registry, "known", make_data(tmp_path / "b", 1))
    with pytest.raises(NotFoundError, match="no version 5"):
        show_dataset(registry, DatasetRef("known", "5"))
    with pytest.raises(NotFoundError):
        verify_uri(registry, "dataset:known@5")
    with pytest.raises(AssayError, match="not a dataset version"):
        verify_uri(registry, "dataset:known@@1")
    assert list_datasets(registry, "unknown") == []

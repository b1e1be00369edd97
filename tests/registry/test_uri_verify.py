"""``verify_uri``: models by number and by alias, datasets, and what MLflow alone cannot be
trusted with (tags edited and aliases moved behind assay's back, versions assay never signed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.core.errors import AssayError, NotFoundError
from assay.core.settings import Settings
from assay.registry.datasets import register_dataset
from assay.registry.facade import Registry
from assay.registry.registration import register_model
from assay.registry.states import mark
from assay.registry.uri_verify import resolve_model_version, verify_uri

CLEARED = ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """``churn`` v1 and v2 registered with assay, alias ``production`` -> 1; ``customers@1``."""
    root = tmp_path_factory.mktemp("uri")
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(root / "home"))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        Registry.initialise(Settings.from_env())
        registry = Registry.open(Settings.from_env())
        for v in (1, 2):
            folder = root / f"churn-{v}"
            folder.mkdir()
            (folder / "weights.bin").write_bytes(bytes([v]) * 4096)
            assert register_model(registry, "churn", str(folder), watermark=False).version == str(v)
        data = root / "customers"
        data.mkdir()
        (data / "rows.csv").write_text("a,b\n1,2\n")
        register_dataset(registry, "customers", data)
        registry.backend.set_alias("churn", "production", "1")
        mark(registry, "churn", "1", "known-good", reason="evaluated")  # production is protected
        yield registry


def test_by_version_alias_and_dataset(registry: Registry) -> None:
    for uri, subject in (
        ("models:/churn/1", "models:/churn/1"),
        ("models:/churn/2", "models:/churn/2"),
        ("models:/churn@production", "models:/churn/1"),
        ("dataset:customers@1", "dataset:customers@1"),
        ("dataset:customers@latest", "dataset:customers@1"),
    ):
        report = verify_uri(registry, uri)
        assert report.ok, report.summary()
        assert report.subject == subject
        assert report.key_name == "default"


def test_unknown_model_version_and_alias(registry: Registry) -> None:
    with pytest.raises(NotFoundError, match="model 'nope' has no version 1"):
        verify_uri(registry, "models:/nope/1")
    with pytest.raises(NotFoundError, match=r"no version 9"):
        verify_uri(registry, "models:/churn/9")
    with pytest.raises(NotFoundError, match="has no alias 'staging'"):
        verify_uri(registry, "models:/churn@staging")
    with pytest.raises(NotFoundError):
        verify_uri(registry, "models:/nope@production")
    for bad in ("models:/churn", "models:/churn/x", "models:/", "models:/a b/1"):
        with pytest.raises(AssayError, match="not a model version"):
            verify_uri(registry, bad)


def test_tag_edited_behind_assays_back_changes_nothing(registry: Registry) -> None:
    registry.backend.set_version_tag("churn", "2", "assay.manifest", "0" * 64)
    registry.backend.set_version_tag("churn", "2", "assay.state", "known-good")
    assert verify_uri(registry, "models:/churn/2").ok  # trust comes from keys, not tags


def test_alias_moved_with_plain_mlflow_onto_an_unsigned_version(
    registry: Registry, tmp_path: Path
) -> None:
    """An attacker registers other bytes with MLflow alone and points ``production`` at them."""
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"backdoored")
    logged = registry.backend.log_model_dir(folder, artifact_path="model")
    evil = registry.backend.create_version("churn", logged.source_uri, run_id=logged.run_id)
    registry.backend.set_alias("churn", "production", evil.version)
    try:
        assert resolve_model_version(registry, "models:/churn@production") == ("churn", "3")
        report = verify_uri(registry, "models:/churn@production")
        assert not report.ok
        assert "was not registered through assay" in report.summary()
    finally:
        registry.backend.set_alias("churn", "production", "1")
    assert verify_uri(registry, "models:/churn@production").ok

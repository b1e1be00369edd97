"""Fixtures shared by the whole suite: an isolated ASSAY_HOME per test."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """Conformance data copied from public projects (see tests/data/README.md)."""
    return DATA


@pytest.fixture
def assay_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ASSAY_HOME with every assay variable cleared."""
    home = tmp_path / "assay-home"
    for var in (
        "ASSAY_DB_URL",
        "MLFLOW_TRACKING_URI",
        "ASSAY_KEY",
        "ASSAY_KEY_PASSPHRASE",
        "ASSAY_TRUST_ROOT",
        "ASSAY_ENFORCE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ASSAY_HOME", str(home))
    monkeypatch.setenv("ASSAY_ACTOR", "test@assay")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home

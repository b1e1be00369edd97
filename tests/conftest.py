"""Fixtures shared by the whole suite: an isolated ASSAY_HOME per test; hypothesis profiles."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - hypothesis is in the dev extra
    pass
else:
    # Property and fuzz tests: a short budget in every run, many more examples with
    # HYPOTHESIS_PROFILE=fuzz (`make fuzz`). The deadline is a generous bound, not a benchmark.
    # No example database: the suite writes nothing into the work tree.
    _common = {
        "deadline": timedelta(seconds=20),
        "database": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    }
    settings.register_profile("default", max_examples=40, **_common)
    settings.register_profile("fuzz", max_examples=3000, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

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

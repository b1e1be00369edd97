"""Fixtures shared by the whole suite: an isolated ASSAY_HOME per test; hypothesis profiles; assay's
store on SQLite and (when ``ASSAY_TEST_PG_URL`` is set, as ``.ci/run`` does) on PostgreSQL; a real
``mlflow server`` shared by the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import mlflow_server as server_helper  # tests/mlflow_server.py, on pytest's pythonpath
import pytest
from store_backends import PG_URL, STORE_BACKENDS, reset_postgres  # tests/store_backends.py

from assay.core.settings import Settings
from assay.store.store import Store

try:
    from hypothesis import HealthCheck
    from hypothesis import settings as hypothesis_settings
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
    hypothesis_settings.register_profile("default", max_examples=40, **_common)
    hypothesis_settings.register_profile("fuzz", max_examples=3000, **_common)
    hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

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


# URL of an ``mlflow server`` on 127.0.0.1 (sqlite backend, proxied artifacts), one per session.
# Tests that use it are marked ``server`` and ``slow``.
mlflow_server = server_helper.mlflow_server_fixture(scope="session")


@pytest.fixture(params=STORE_BACKENDS)
def settings(
    request: pytest.FixtureRequest, assay_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings whose store is SQLite, then an emptied PostgreSQL database (a module may override)."""
    if request.param == "postgresql":
        assert PG_URL
        reset_postgres(PG_URL)
        monkeypatch.setenv("ASSAY_DB_URL", PG_URL)
    return Settings.from_env()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = Store.open(settings, create=True)
    yield store
    store.dispose()

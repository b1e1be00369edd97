"""Fixtures for the registry tests: a real ``mlflow server`` shared by the session, and assay's
store on SQLite and (when ``ASSAY_TEST_PG_URL`` is set, as ``.ci/run`` does) on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow_server as server_helper  # tests/mlflow_server.py, on pytest's pythonpath
import pytest
from store_backends import PG_URL, STORE_BACKENDS, reset_postgres  # tests/store_backends.py

from assay.core.settings import Settings
from assay.store.store import Store

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

"""assay's store on SQLite and (when ``ASSAY_TEST_PG_URL`` is set, as ``.ci/run`` does) on
PostgreSQL: the parameters store tests run under, importable by name from any test folder
(``tests/registry/conftest.py`` builds its ``settings`` fixture from them)."""

from __future__ import annotations

import os

import pytest

PG_URL = os.environ.get("ASSAY_TEST_PG_URL")
STORE_BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="ASSAY_TEST_PG_URL is not set"),
        ],
    ),
]


def reset_postgres(url: str) -> None:
    """An empty database: every table of every migration goes, whatever later ones added."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()

"""assay's store on SQLite and (when ``ASSAY_TEST_PG_URL`` is set, as ``.ci/run`` does) on
PostgreSQL: the parameters store tests run under, importable by name from any test folder
(``tests/conftest.py`` builds its ``settings`` fixture from them), and databases of a
test's own (:func:`fresh_database`, also as a copy of another; :func:`drop_database`) for homes
whose store lives on PostgreSQL. The user of ``ASSAY_TEST_PG_URL`` must be allowed to create
databases (``.ci/run``'s is)."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import uuid

import pytest


def create_database(conn, statement: str, attempts: int = 50) -> None:  # type: ignore[no-untyped-def]
    """Run a CREATE DATABASE, retrying while another client (another xdist worker) holds the
    template database, which PostgreSQL refuses to copy while it is in use."""
    import time

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    for attempt in range(attempts):
        try:
            conn.execute(text(statement))
            return
        except OperationalError as exc:
            if "is being accessed by other users" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1)


def _worker_database(url: str, worker: str) -> str:
    """Under pytest-xdist each worker resets and fills a database of its own (``<db>_<worker>``),
    created on first use; the variable is rewritten so every test of that worker sees it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_{worker}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if not exists:
                create_database(conn, f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    worker_url = base.set(database=name).render_as_string(hide_password=False)
    os.environ["ASSAY_TEST_PG_URL"] = worker_url
    return worker_url


PG_URL = os.environ.get("ASSAY_TEST_PG_URL")
if PG_URL and os.environ.get("PYTEST_XDIST_WORKER"):
    PG_URL = _worker_database(PG_URL, os.environ["PYTEST_XDIST_WORKER"])
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


_clone_lock = threading.Lock()  # PostgreSQL copies a template database for one client at a time
_created: set[str] = set()  # databases this session made and has not dropped yet


def _admin():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    assert PG_URL, "ASSAY_TEST_PG_URL is not set"
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT")


def _url_of(name: str) -> str:
    from sqlalchemy.engine import make_url

    assert PG_URL
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def fresh_database(template: str | None = None) -> str:
    """URL of a new database beside ``ASSAY_TEST_PG_URL``'s: empty, or a copy of ``template``
    (a URL from this function; its open connections are closed first, as PostgreSQL requires)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"assay_t_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    try:
        with _clone_lock, admin.connect() as conn:
            if template is None:
                create_database(conn, f'CREATE DATABASE "{name}"')
            else:
                source = make_url(template).database
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": source},
                )
                create_database(conn, f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    finally:
        admin.dispose()
    _created.add(name)
    return _url_of(name)


def drop_database(url: str) -> None:
    """Drop a database made by :func:`fresh_database` (closing whatever is still connected)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = _admin()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
    _created.discard(name)


@atexit.register
def _drop_leftovers() -> None:
    """Copies made for crash tests live until the end of the session: drop them then."""
    for name in sorted(_created):
        with contextlib.suppress(Exception):  # the server may be gone already
            drop_database(_url_of(name))

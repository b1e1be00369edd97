"""SQLite files opened with the standard library, for the fast paths that skip SQLAlchemy.

``verify``, the read commands and ``sign`` must start fast; importing SQLAlchemy alone costs about
0.25 s. This module is the one place that finds the file behind a ``sqlite:///`` URL, opens a
SQLite database read-only (assay's store or MLflow's), opens assay's store with its schema checked
at head (read-only, or read-write set up as ``Store`` sets up its connections), and parses its
timestamps as ``UTCDateTime`` does.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from assay.core.errors import NotInitialisedError
from assay.store.store import HEAD_REVISION, SQLITE_BUSY_TIMEOUT_S

if TYPE_CHECKING:
    from assay.core.settings import Settings

__all__ = ["connect_readonly", "connect_store", "open_readonly", "parse_utc", "sqlite_path"]


def parse_utc(value: str | None) -> datetime | None:
    """Aware UTC from the store's text (SQLite keeps naive UTC), as ``UTCDateTime`` returns."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def sqlite_path(db_url: str) -> Path | None:
    """The file behind a plain ``sqlite:///`` URL, or None for anything else."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if db_url.startswith(prefix):
            rest = db_url[len(prefix) :]
            if not rest or rest.startswith(":memory:") or "?" in rest:
                return None
            return Path(rest)
    return None


def open_readonly(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """The one way assay opens a SQLite database read-only (its own store or MLflow's): a
    ``file:`` URI of the resolved path (percent-encoded, so ``?`` or ``#`` in a folder name
    cannot change the mode), ``mode=ro``, a 30 s busy timeout."""
    return sqlite3.connect(
        f"{Path(path).resolve().as_uri()}?mode=ro",
        uri=True,
        timeout=30,
        check_same_thread=check_same_thread,
    )


def connect_readonly(settings: Settings, path: Path) -> sqlite3.Connection:
    """A read-only ``sqlite3`` connection to the store at ``path``, its schema checked at head."""
    return connect_store(settings, path)


def connect_store(settings: Settings, path: Path, *, write: bool = False) -> sqlite3.Connection:
    """A ``sqlite3`` connection to the store at ``path``, its schema checked at head.

    ``write``: read-write, set up as :class:`~assay.store.store.Store` sets up its SQLite
    connections (busy timeout, foreign keys, WAL; no implicit transactions: callers BEGIN).
    """
    if not path.exists():
        raise NotInitialisedError(f"assay is not initialised in {settings.home}: run `assay init`")
    if write:
        conn = sqlite3.connect(
            f"{Path(path).resolve().as_uri()}?mode=rw",  # percent-encoded, as open_readonly
            uri=True,
            timeout=SQLITE_BUSY_TIMEOUT_S,
            isolation_level=None,
        )
        conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_mode = WAL")
    else:
        conn = open_readonly(path)
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise NotInitialisedError(
            f"assay is not initialised in {settings.home}: run `assay init`"
        ) from exc
    if row is None or row[0] != HEAD_REVISION:
        conn.close()
        raise NotInitialisedError(
            f"assay's store is at schema revision {row and row[0]}, this assay expects "
            f"{HEAD_REVISION}: run `assay init` to upgrade it"
        )
    return conn

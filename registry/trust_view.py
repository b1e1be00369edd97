"""Read-only views of what the store trusts, for the verification path.

``verify`` must start fast (DESIGN: at most 0.3 s for a small model) and importing SQLAlchemy
alone costs about 0.25 s. For the default SQLite store, ``SqliteTrustView`` answers the two
questions verification asks with the standard library's ``sqlite3`` in read-only mode; any other
database URL goes through ``KeyService`` (SQLAlchemy). Both implement ``TrustView``.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from assay.core.errors import NotInitialisedError
from assay.core.settings import Settings
from assay.integrity.keys import PublicKey
from assay.integrity.trust import KeyRecord
from assay.integrity.trust_list import (
    TRUST_SUBJECT,
    TrustList,
    evaluate_trust_list,
    pinned_trust_root,
)
from assay.store.store import HEAD_REVISION


class TrustView(Protocol):
    """What verification needs from the store."""

    def for_hint(
        self, hint: str | None, embedded_pem: str | None = None
    ) -> tuple[KeyRecord, PublicKey] | None: ...

    def recorded_at(self, bundle_text: str, root_digest: str, key_id: str) -> datetime | None: ...

    def public_key(self, key_id: str) -> PublicKey | None: ...

    def record_of(self, key_id: str) -> KeyRecord | None: ...


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
        from assay.store.store import SQLITE_BUSY_TIMEOUT_S

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


class SqliteTrustView:
    """``TrustView`` over the SQLite store with ``sqlite3`` (read-only, no SQLAlchemy)."""

    def __init__(
        self, settings: Settings, path: Path, *, conn: sqlite3.Connection | None = None
    ) -> None:
        self._settings = settings
        self._conn = conn if conn is not None else connect_readonly(settings, path)
        self._trust: TrustList | None = None
        self._marker: tuple[int, int] | None = None

    def trust_list(self) -> TrustList:
        """The signed trust list in force (re-evaluated only when its rows change)."""
        marker = self._conn.execute(
            "SELECT count(*), max(id) FROM signatures WHERE subject = ?", (TRUST_SUBJECT,)
        ).fetchone()
        if self._trust is None or self._marker != marker:
            rows = self._conn.execute(
                "SELECT bundle FROM signatures WHERE subject = ?", (TRUST_SUBJECT,)
            ).fetchall()
            self._trust = evaluate_trust_list(
                (r[0] for r in rows), pinned_trust_root(self._settings)
            )
            self._marker = marker
        return self._trust

    def for_hint(
        self, hint: str | None, embedded_pem: str | None = None
    ) -> tuple[KeyRecord, PublicKey] | None:
        entry = self.trust_list().for_hint(hint, embedded_pem)
        return (entry.record(), entry.public_key) if entry else None

    def recorded_at(self, bundle_text: str, root_digest: str, key_id: str) -> datetime | None:
        rows = self._conn.execute(
            "SELECT bundle, recorded_at FROM signatures WHERE manifest_root = ? AND key_id = ?"
            " ORDER BY recorded_at",
            (root_digest, key_id),
        ).fetchall()
        for bundle, when in rows:
            if bundle.strip() == bundle_text.strip():
                return parse_utc(when)
        return None

    def public_key(self, key_id: str) -> PublicKey | None:
        entry = self.trust_list().get(key_id)
        return entry.public_key if entry else None

    def record_of(self, key_id: str) -> KeyRecord | None:
        entry = self.trust_list().get(key_id)
        return entry.record() if entry else None


def open_trust_view(settings: Settings) -> TrustView:
    """The fastest trust view for ``settings``' store."""
    path = sqlite_path(settings.db_url)
    if path is not None:
        return SqliteTrustView(settings, path)
    from assay.registry.facade import Registry

    return Registry.open(settings).keys

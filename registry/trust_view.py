"""Read-only views of what the store trusts, for the verification path.

``verify`` must start fast (DESIGN: at most 0.3 s for a small model) and importing SQLAlchemy
alone costs about 0.25 s. For the default SQLite store, ``SqliteTrustView`` answers the two
questions verification asks with the standard library's ``sqlite3`` in read-only mode; any other
database URL goes through ``KeyService`` (SQLAlchemy). Both implement ``TrustView``.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Protocol

from assay.core.settings import Settings
from assay.integrity.keys import PublicKey
from assay.store.sqlite_readonly import connect_readonly, parse_utc, sqlite_path
from assay.trust.key_records import KeyRecord
from assay.trust.trust_list import (
    TRUST_SUBJECT,
    TrustList,
    evaluate_trust_list,
    pinned_trust_root,
)


class TrustView(Protocol):
    """What verification needs from the store."""

    def for_hint(
        self, hint: str | None, embedded_pem: str | None = None
    ) -> tuple[KeyRecord, PublicKey] | None: ...

    def recorded_at(self, bundle_text: str, root_digest: str, key_id: str) -> datetime | None: ...

    def public_key(self, key_id: str) -> PublicKey | None: ...

    def record_of(self, key_id: str) -> KeyRecord | None: ...


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

"""Read-only ``sqlite3`` views for the commands that only read assay's store or MLflow's aliases.

Importing SQLAlchemy alone costs about 0.25 s and ``import mlflow`` 3-4 s, while ``assay audit
log``, ``key list``, ``dataset list|show`` must answer within 0.3 s and ``assay verify
models:/NAME@ALIAS`` must not pay for MLflow (DESIGN §4). For the default ``sqlite:///`` store,
:class:`SqliteStoreView` answers with the standard library (the read-only connection and schema
revision check of :func:`assay.registry.trust_view.connect_readonly`) and returns the very records
the SQLAlchemy code returns: ``KeyRecord``, ``VersionRecord`` and audit event dicts shaped as
``Registry.audit_events`` shapes them, timestamps as aware UTC datetimes. Any other store URL goes
through the ``Registry`` (SQLAlchemy) as before.

:func:`read_alias` reads ``registered_model_aliases`` of an embedded ``sqlite:///`` MLflow
database the same way; it returns None on anything unexpected so that callers fall back to the
MLflow backend.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from assay.core.errors import NotFoundError, NotInitialisedError
from assay.registry.trust_view import SqliteTrustView
from assay.store.sqlite_readonly import connect_readonly, parse_utc, sqlite_path
from assay.store.version_record import (
    KIND_LABEL,
    VersionRecord,
    display,
    record_from_row,
    version_key,
)
from assay.trust.binding import SUBJECT_PREFIX
from assay.trust.key_records import KeyRecord, KeyRow

if TYPE_CHECKING:
    from assay.core.refs import DatasetRef
    from assay.core.settings import Settings

__all__ = [
    "SignedArtifact",
    "SqliteStoreView",
    "StoreReads",
    "audit_events",
    "list_datasets",
    "list_keys",
    "open_reads",
    "open_store_view",
    "read_alias",
    "show_dataset",
]

_HEAD_ID = 1  # the audit log's single head row (see assay.store.audit)
_ARTIFACT_COLUMNS = "id, kind, name, version, uri, manifest_root, created_at"


@dataclass(frozen=True)
class SignedArtifact:
    """What verifying a registered version reads from the store."""

    subject: str
    uri: str | None
    bundle: str | None
    manifest_root: str  # of the bundle row; "" when there is none
    binding: str | None
    binding_key: str | None


class SqliteStoreView:
    """Read-only answers from the SQLite store, without SQLAlchemy."""

    def __init__(self, settings: Settings, path: Path) -> None:
        self.settings = settings
        self.conn = connect_readonly(settings, path)
        self.trust = SqliteTrustView(settings, path, conn=self.conn)

    def close(self) -> None:
        self.conn.close()

    # -- audit ------------------------------------------------------------------------------

    def audit_events(self, limit: int | None = None) -> list[dict[str, Any]]:
        """As ``Registry.audit_events``: the newest ``limit`` (all when None), oldest first."""
        row = self.conn.execute(
            "SELECT tree_size FROM audit_head WHERE id = ?", (_HEAD_ID,)
        ).fetchone()
        if row is None:
            raise NotInitialisedError("the audit log has no head row: run `assay init`")
        start = max(0, row[0] - limit) if limit else 0
        rows = self.conn.execute(
            "SELECT seq, ts, actor, action, subject, payload, leaf_hash FROM audit_events"
            " WHERE seq >= ? ORDER BY seq",
            (start,),
        )
        return [
            {
                "seq": seq,
                "ts": parse_utc(ts).isoformat(timespec="seconds"),  # type: ignore[union-attr]
                "actor": actor,
                "action": action,
                "subject": subject,
                "payload": json.loads(payload),
                "leaf_hash": leaf_hash,
            }
            for seq, ts, actor, action, subject, payload, leaf_hash in rows
        ]

    # -- keys -------------------------------------------------------------------------------

    def keys(self) -> list[KeyRecord]:
        """As ``KeyService.list``: every key, oldest first, ``has_private`` from the keyring,
        trust and roles from the signed trust list."""
        from assay.integrity.keyring import Keyring

        private = {i.key_id for i in Keyring(self.settings.keys_dir).list() if i.has_private}
        trust = self.trust.trust_list()
        rows = self.conn.execute(
            "SELECT key_id, name, key_type, created_at, revoked_at, revoke_reason,"
            " compromised_since FROM keys ORDER BY created_at"
        )
        return [
            trust.key_record(
                KeyRow(
                    key_id,
                    name,
                    key_type,
                    parse_utc(created),
                    parse_utc(revoked),
                    reason,
                    parse_utc(since),
                ),
                has_private=key_id in private,
            )
            for key_id, name, key_type, created, revoked, reason, since in rows
        ]

    # -- versions ---------------------------------------------------------------------------

    def _artifacts(self, kind: str, name: str | None = None) -> list[tuple[Any, ...]]:
        sql = f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE kind = ?"
        params: tuple[Any, ...] = (kind,)
        if name is not None:
            sql, params = sql + " AND name = ?", (kind, name)
        return self.conn.execute(sql, params).fetchall()

    def _status(self, artifact_id: int) -> str:
        row = self.conn.execute(
            "SELECT status FROM artifact_states WHERE artifact_id = ?", (artifact_id,)
        ).fetchone()
        return row[0] if row else "complete"

    def _latest_signature(self, artifact_id: int, prefix: str) -> tuple[str, str, str] | None:
        """(key_id, bundle, manifest_root) of the newest signature whose subject has ``prefix``."""
        rows = self.conn.execute(
            "SELECT subject, key_id, bundle, manifest_root FROM signatures"
            " WHERE artifact_id = ? ORDER BY id DESC",
            (artifact_id,),
        )
        for subject, key_id, bundle, root in rows:
            if subject.startswith(prefix):
                return key_id, bundle, root
        return None

    def _find(self, kind: str, name: str, version: str | None) -> tuple[Any, ...] | None:
        """As ``versions.find_artifact``."""
        if version is None:
            rows = [r for r in self._artifacts(kind, name) if self._status(r[0]) == "complete"]
            return max(rows, key=lambda r: version_key(r[3]), default=None)
        return self.conn.execute(
            f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE kind = ? AND name = ? AND version = ?",
            (kind, name, str(version)),
        ).fetchone()

    def _require(self, kind: str, name: str, version: str | None) -> tuple[Any, ...]:
        """As ``versions.require_artifact``: the row or a NotFoundError naming what exists."""
        row = self._find(kind, name, version)
        if row is not None:
            return row
        known = self.conn.execute(
            "SELECT version FROM artifacts WHERE kind = ? AND name = ?", (kind, name)
        )
        versions = sorted((v for (v,) in known if v), key=version_key)
        what = KIND_LABEL.get(kind, kind)
        if not versions:
            raise NotFoundError(f"no {what} named {name!r} is registered with assay")
        raise NotFoundError(
            f"{what} {name!r} has no version {version} (registered: {', '.join(versions)})"
        )

    def _record(self, row: tuple[Any, ...]) -> VersionRecord:
        """As ``versions.record_of``."""
        artifact_id, kind, name, version, uri, manifest_root, created = row
        state = self.conn.execute(
            "SELECT state, status, reason, incident_id, run_id, source, labels"
            " FROM artifact_states WHERE artifact_id = ?",
            (artifact_id,),
        ).fetchone()
        signature = self._latest_signature(artifact_id, display(kind, name, version))
        parents = self.conn.execute(
            "SELECT artifacts.name, artifacts.version, lineage.relation FROM artifacts"
            " JOIN lineage ON lineage.parent_id = artifacts.id WHERE lineage.child_id = ?",
            (artifact_id,),
        ).fetchall()
        return record_from_row(
            kind,
            name,
            version,
            uri=uri,
            manifest_root=manifest_root,
            created_at=parse_utc(created),
            state=state,
            key_id=signature[0] if signature else None,
            lineage=parents,
        )

    def versions(
        self, kind: str, name: str | None = None, *, complete_only: bool = True
    ) -> list[VersionRecord]:
        """As ``versions.list_records``."""
        records = [self._record(row) for row in self._artifacts(kind, name)]
        if complete_only:
            records = [r for r in records if r.status == "complete"]
        return sorted(records, key=lambda r: (r.name, version_key(r.version)))

    def version(self, kind: str, name: str, version: str | None) -> VersionRecord:
        """One version (the newest complete one when ``version`` is None), or NotFoundError."""
        return self._record(self._require(kind, name, version))

    def signed_artifact(self, kind: str, name: str, version: str | None) -> SignedArtifact:
        """The stored URI, bundle and registration binding of a version (NotFoundError if none)."""
        row = self._require(kind, name, version)
        subject = display(kind, name, row[3])
        bundle = self._latest_signature(row[0], subject)
        binding = self._latest_signature(row[0], SUBJECT_PREFIX + subject)
        return SignedArtifact(
            subject=subject,
            uri=row[4],
            bundle=bundle[1] if bundle else None,
            manifest_root=bundle[2] if bundle else "",
            binding=binding[1] if binding else None,
            binding_key=binding[0] if binding else None,
        )


def open_store_view(settings: Settings) -> SqliteStoreView | None:
    """The ``sqlite3`` view of ``settings``' store, or None when it is not a plain SQLite file."""
    path = sqlite_path(settings.db_url)
    return SqliteStoreView(settings, path) if path is not None else None


class StoreReads(Protocol):
    """What the store-only commands read: the same records from either implementation."""

    def audit_events(self, limit: int | None = None) -> list[dict[str, Any]]: ...

    def keys(self) -> list[KeyRecord]: ...

    def versions(
        self, kind: str, name: str | None = None, *, complete_only: bool = True
    ) -> list[VersionRecord]: ...

    def version(self, kind: str, name: str, version: str | None) -> VersionRecord: ...


class _RegistryReads:
    """:class:`StoreReads` through the ``Registry`` (SQLAlchemy), for any other store URL."""

    def __init__(self, settings: Settings) -> None:
        from assay.registry.facade import Registry

        self.registry = Registry.open(settings)

    def audit_events(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.registry.audit_events(limit=limit)

    def keys(self) -> list[KeyRecord]:
        return self.registry.keys.list()

    def versions(
        self, kind: str, name: str | None = None, *, complete_only: bool = True
    ) -> list[VersionRecord]:
        from assay.registry.versions import list_records

        with self.registry.store.session(readonly=True) as session:
            return list_records(session, kind, name, complete_only=complete_only)

    def version(self, kind: str, name: str, version: str | None) -> VersionRecord:
        from assay.registry.versions import record_of, require_artifact

        with self.registry.store.session(readonly=True) as session:
            return record_of(session, require_artifact(session, kind, name, version))


@contextmanager
def open_reads(settings: Settings) -> Iterator[StoreReads]:
    """The one "sqlite3 view, else Registry" choice: the standard-library view of a plain SQLite
    store (no SQLAlchemy import), the ``Registry`` for any other store; closed on exit."""
    view = open_store_view(settings)
    if view is None:
        yield _RegistryReads(settings)
        return
    try:
        yield view
    finally:
        view.close()


# -- what the store-only commands call ---------------------------------------------------------


def audit_events(settings: Settings, limit: int | None = None) -> list[dict[str, Any]]:
    with open_reads(settings) as reads:
        return reads.audit_events(limit)


def list_keys(settings: Settings) -> list[KeyRecord]:
    with open_reads(settings) as reads:
        return reads.keys()


def list_datasets(settings: Settings, name: str | None = None) -> list[VersionRecord]:
    with open_reads(settings) as reads:
        return reads.versions("dataset", name)


def show_dataset(settings: Settings, ref: DatasetRef) -> VersionRecord:
    with open_reads(settings) as reads:
        return reads.version("dataset", ref.name, ref.version)


# -- MLflow's aliases --------------------------------------------------------------------------


def read_alias(tracking_uri: str, name: str, alias: str) -> str | None:
    """The version ``alias`` of model ``name`` points at, read from an embedded MLflow SQLite
    database without importing mlflow; None when not found or not readable this way (the caller
    then asks the MLflow backend, which also gives the precise error)."""
    from assay.mlflow_access.sqlite_reader import open_reader

    reader = open_reader(tracking_uri)
    if reader is None:
        return None
    try:
        return reader.aliases(name).get(alias)
    except sqlite3.Error:
        return None
    finally:
        reader.close()


def read_download_uri(tracking_uri: str, name: str, version: str) -> str | None:
    """Where an embedded MLflow SQLite database says it serves ``name``/``version`` from, read
    without importing mlflow; None when not found or not readable this way."""
    from assay.mlflow_access.sqlite_reader import open_reader

    reader = open_reader(tracking_uri)
    if reader is None:
        return None
    try:
        return reader.download_uri(name, version)
    except (sqlite3.Error, ValueError):
        return None
    finally:
        reader.close()

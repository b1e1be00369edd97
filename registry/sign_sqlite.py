"""``assay sign`` on the default SQLite store with stdlib ``sqlite3`` (no SQLAlchemy import).

Importing SQLAlchemy and the ORM models costs about 0.4 CPU-seconds, more than re-signing a model
whose digests are cached. For a plain ``sqlite:///`` store, :func:`sign_path_sqlite` applies the
same rules as :func:`assay.trust.signing.sign_path` (the signed trust list and policy, the
key's status and role: :mod:`assay.trust.signer_check`) and writes the same rows in one
``BEGIN IMMEDIATE`` transaction: the ``path`` artifact (created or its root updated), the
signature, and the ``sign`` audit leaf (``audit_head`` bumped first, as
:meth:`assay.store.audit.AuditLog.append` does). Timestamps are stored as SQLAlchemy's SQLite
dialect stores them (naive UTC ``YYYY-MM-DD HH:MM:SS.ffffff``), so the ORM reads them back and
audit verification recomputes the same leaves (``tests/registry/test_sign_sqlite.py`` checks the
two paths against each other). Any other database goes through the ORM path.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.atomic import staged_write
from assay.core.canonical import canonical_json
from assay.core.errors import AssayError, ConfigError
from assay.registry.trust_view import SqliteTrustView
from assay.store.audit_leaf import leaf_data
from assay.store.merkle import hash_leaf
from assay.store.sqlite_readonly import connect_store
from assay.trust.signer_check import acting_key_id, check_signer
from assay.trust.signing import Signed, SignResult, check_target, hash_and_sign

if TYPE_CHECKING:
    from assay.core.settings import Settings
    from assay.integrity.hashing import ProgressCallback
    from assay.integrity.prehash import Prehash

__all__ = ["db_time", "sign_path_sqlite"]

_HEAD_ID = 1


def db_time(moment: datetime) -> str:
    """An aware datetime as SQLAlchemy's SQLite dialect stores ``UTCDateTime`` (naive UTC)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def sign_path_sqlite(
    settings: Settings,
    db_path: Path,
    path: Path,
    *,
    key: str | None = None,
    signature: Path | None = None,
    reuse_digests: bool = False,
    ignore_paths: tuple[str, ...] = (),
    progress: ProgressCallback | None = None,
    hash_type: str | None = None,
    shard_size: int | None = None,
    prehash: Prehash | None = None,
) -> SignResult:
    """:func:`assay.trust.signing.sign_path` for the SQLite store at ``db_path``."""
    from assay.integrity.keyring import resolve_signing_key
    from assay.trust.policy import POLICY_SUBJECT, evaluate_policy

    path, signature = check_target(path, signature)
    conn = connect_store(settings, db_path, write=True)
    try:
        try:
            trust = SqliteTrustView(settings, db_path, conn=conn).trust_list()
            envelopes = [
                row[0]
                for row in conn.execute(
                    "SELECT bundle FROM signatures WHERE subject = ?", (POLICY_SUBJECT,)
                )
            ]
        except sqlite3.Error as exc:
            raise _store_error(exc) from exc
        policy = evaluate_policy(envelopes, trust)
        signing_key = resolve_signing_key(settings, key)
        check_signer(signing_key, trust, policy.role_for("register"))
        signed = hash_and_sign(
            path,
            signature,
            signing_key,
            policy,
            home=settings.home,
            reuse_digests=reuse_digests,
            ignore_paths=ignore_paths,
            progress=progress,
            hash_type=hash_type,
            shard_size=shard_size,
            prehash=prehash,
        )
        actor = _actor(settings)
        # Stage the bundle first (an unwritable folder fails before the store changes); it
        # replaces any old bundle only once the transaction has committed.
        with staged_write(signature, signed.bundle.encode("utf-8")):
            _record(conn, signed, actor)
    finally:
        conn.close()
    if signed.cache is not None:
        signed.cache.save()
    return signed.result()


def _actor(settings: Settings) -> str:
    from assay.trust.signed_changes import actor_label

    return actor_label(acting_key_id(settings), settings.actor)


def _store_error(exc: sqlite3.Error) -> AssayError:
    return AssayError(f"store error (sqlite): {' '.join(str(exc).split())}")


def _record(conn: sqlite3.Connection, signed: Signed, actor: str) -> None:
    """The artifact, signature and audit rows of one ``sign``, committed together."""
    subject, root = signed.subject, signed.manifest.root_digest
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT id FROM artifacts WHERE kind = 'path' AND name = ? AND version IS NULL",
                (subject,),
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO artifacts (kind, name, version, uri, manifest_root, created_at)"
                    " VALUES ('path', ?, NULL, ?, ?, ?)",
                    (subject, subject, root, db_time(_now())),
                )
                artifact_id = cur.lastrowid
            else:
                artifact_id = row[0]
                conn.execute(
                    "UPDATE artifacts SET manifest_root = ? WHERE id = ?", (root, artifact_id)
                )
            conn.execute(
                "INSERT INTO signatures (artifact_id, subject, manifest_root, key_id, bundle,"
                " recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (artifact_id, subject, root, signed.key_id, signed.bundle, db_time(_now())),
            )
            _append_audit(conn, actor, "sign", f"path:{subject}", signed.audit_payload())
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise _store_error(exc) from exc


def _append_audit(
    conn: sqlite3.Connection, actor: str, action: str, subject: str, payload: dict[str, Any]
) -> None:
    """:meth:`assay.store.audit.AuditLog.append` inside the caller's transaction."""
    payload_text = canonical_json(payload).decode("utf-8")
    row = conn.execute(
        "UPDATE audit_head SET tree_size = tree_size + 1 WHERE id = ? RETURNING tree_size",
        (_HEAD_ID,),
    ).fetchall()
    if not row:
        raise ConfigError("the audit log has no head row: run `assay init`")
    seq = row[0][0] - 1
    ts = _now()
    data = leaf_data(seq=seq, ts=ts, actor=actor, action=action, subject=subject, payload=payload)
    conn.execute(
        "INSERT INTO audit_events (seq, ts, actor, action, subject, payload, leaf_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, db_time(ts), actor, action, subject, payload_text, hash_leaf(data).hex()),
    )

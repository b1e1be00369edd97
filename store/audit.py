"""The audit log: append-only events as leaves of an RFC 9162 Merkle tree, signed checkpoints.

* :meth:`AuditLog.append` adds one event inside the caller's transaction, so a state change and
  its event commit (or roll back) together. ``seq`` (the leaf index, from 0) is assigned under a
  cross-process lock: the single ``audit_head`` row is updated first (a row lock on PostgreSQL,
  the database write lock on SQLite), so concurrent appenders queue and never leave gaps.
* Leaf data is the canonical JSON of ``{seq, ts, actor, action, subject, payload}``; the leaf hash
  is ``SHA-256(0x00 || data)``.
* :meth:`AuditLog.checkpoint` signs ``origin\\nsize\\nbase64(root)\\n`` (the body of a C2SP
  checkpoint) and writes it, as JSON, to a file outside the database; it also records it in the
  ``checkpoints`` table.
* :meth:`AuditLog.verify` recomputes every leaf from its row and checks the log against signed
  checkpoints: edited, deleted, truncated or re-hashed history is reported.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select, update

from assay.core.atomic import write_new_numbered
from assay.core.canonical import canonical_json, iso_utc, parse_iso_utc
from assay.core.errors import (
    AssayError,
    FormatError,
    IntegrityError,
    NotInitialisedError,
)
from assay.store.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MerkleTree,
    ProofError,
    hash_leaf,
    verify_consistency,
)
from assay.store.models import AuditEvent, AuditHead, Checkpoint, leaf_data, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.store.store import Store

__all__ = [
    "CHECKPOINT_FORMAT",
    "AuditEvent",
    "AuditLog",
    "AuditReport",
    "CheckpointFile",
    "Signer",
    "Verifier",
    "leaf_data",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "assay-checkpoint/v1"
_HEAD_ID = 1


class Signer(Protocol):
    """What :meth:`AuditLog.checkpoint` needs from a signing key."""

    key_id: str

    def sign(self, data: bytes) -> bytes: ...


#: ``verify(key_id, signature, data) -> bool``: True only for a valid signature by a trusted key.
Verifier = Callable[[str, bytes, bytes], bool]


def _b64decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{what} is not valid base64") from exc


@dataclass(frozen=True)
class CheckpointFile:
    """A signed statement that the log had ``tree_size`` leaves with root ``root_hash``."""

    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: datetime
    key_id: str
    signature: bytes
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"checkpoint@{self.tree_size}"

    def body(self) -> bytes:
        """The signed bytes: a C2SP checkpoint body ``origin\\nsize\\nbase64(root)\\n``."""
        return checkpoint_body(self.origin, self.tree_size, self.root_hash)

    def to_json(self) -> bytes:
        return (
            json.dumps(
                {
                    "format": CHECKPOINT_FORMAT,
                    "origin": self.origin,
                    "tree_size": self.tree_size,
                    "root_hash": base64.b64encode(self.root_hash).decode("ascii"),
                    "timestamp": iso_utc(self.timestamp),
                    "key_id": self.key_id,
                    "signature": base64.b64encode(self.signature).decode("ascii"),
                },
                indent=2,
            ).encode("utf-8")
            + b"\n"
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CheckpointFile:
        """Read a checkpoint file written by :meth:`AuditLog.checkpoint`."""
        path = Path(path)
        try:
            doc = json.loads(path.read_bytes())
        except OSError as exc:
            raise FormatError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"checkpoint {path} is not JSON") from exc
        if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
            raise FormatError(f"{path} is not an assay checkpoint ({CHECKPOINT_FORMAT})")
        try:
            origin, size, key_id = doc["origin"], doc["tree_size"], doc["key_id"]
            root = _b64decode(doc["root_hash"], f"root_hash of {path}")
            signature = _b64decode(doc["signature"], f"signature of {path}")
            timestamp = parse_iso_utc(doc["timestamp"])
        except KeyError as exc:
            raise FormatError(f"checkpoint {path} has no {exc.args[0]}") from exc
        if not isinstance(origin, str) or "\n" in origin or not origin:
            raise FormatError(f"checkpoint {path} has an invalid origin")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FormatError(f"checkpoint {path} has an invalid tree_size")
        if not isinstance(key_id, str):
            raise FormatError(f"checkpoint {path} has an invalid key_id")
        if len(root) != HASH_SIZE:
            raise FormatError(f"checkpoint {path} root_hash is not {HASH_SIZE} bytes")
        return cls(origin, size, root, timestamp, key_id, signature, path)

    @classmethod
    def from_row(cls, row: Checkpoint) -> CheckpointFile:
        return cls(
            origin=row.origin,
            tree_size=row.tree_size,
            root_hash=bytes.fromhex(row.root_hash),
            timestamp=row.created_at,
            key_id=row.key_id,
            signature=base64.b64decode(row.signature),
        )

    def _identity(self) -> tuple[str, int, bytes, str, bytes]:
        return (self.origin, self.tree_size, self.root_hash, self.key_id, self.signature)


def checkpoint_body(origin: str, tree_size: int, root_hash: bytes) -> bytes:
    return f"{origin}\n{tree_size}\n{base64.b64encode(root_hash).decode('ascii')}\n".encode()


@dataclass
class AuditReport:
    """What :meth:`AuditLog.verify` found."""

    ok: bool
    tree_size: int
    problems: list[str] = field(default_factory=list)
    #: How many checkpoints were checked (files given plus the store's own rows).
    checked_checkpoints: int = 0
    #: Their names: file paths, or ``<store checkpoint N>`` for rows without a file given.
    checkpoints: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def raise_for_failure(self) -> None:
        """Raise :class:`IntegrityError` (one line) when the log does not verify."""
        if self.ok:
            return
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        raise IntegrityError(f"audit log does not verify: {self.problems[0]}{more}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tree_size": self.tree_size,
            "problems": list(self.problems),
            "checked_checkpoints": self.checked_checkpoints,
            "checkpoints": list(self.checkpoints),
            "warnings": list(self.warnings),
        }


class AuditLog:
    """The audit log kept in ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- writing --------------------------------------------------------------------------

    def append(
        self,
        session: Session,
        *,
        actor: str,
        action: str,
        subject: str,
        payload: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Append one event in ``session``'s transaction; it commits with the caller's changes."""
        payload = {} if payload is None else payload
        if not isinstance(payload, dict):
            raise FormatError("audit payload must be a JSON object")
        for name, value in (("actor", actor), ("action", action), ("subject", subject)):
            if not isinstance(value, str) or not value:
                raise FormatError(f"audit event {name} must be a non-empty string")
        payload_text = canonical_json(payload).decode("utf-8")
        head = AuditHead.__table__
        # Taking the lock first: this UPDATE blocks other appenders until we commit.
        new_size = session.execute(
            update(head)
            .where(head.c.id == _HEAD_ID)
            .values(tree_size=head.c.tree_size + 1)
            .returning(head.c.tree_size)
        ).scalar_one_or_none()
        if new_size is None:
            raise NotInitialisedError("the audit log has no head row: run `assay init`")
        seq = new_size - 1
        ts = utcnow()
        data = leaf_data(
            seq=seq, ts=ts, actor=actor, action=action, subject=subject, payload=payload
        )
        event = AuditEvent(
            seq=seq,
            ts=ts,
            actor=actor,
            action=action,
            subject=subject,
            payload=payload_text,
            leaf_hash=hash_leaf(data).hex(),
        )
        session.add(event)
        session.flush()
        return event

    # -- reading --------------------------------------------------------------------------

    def events(self, start: int = 0, end: int | None = None) -> list[AuditEvent]:
        """Events with ``start <= seq < end`` in order."""
        query = select(AuditEvent).where(AuditEvent.seq >= start).order_by(AuditEvent.seq)
        if end is not None:
            query = query.where(AuditEvent.seq < end)
        with self.store.session(readonly=True) as session:
            return list(session.scalars(query))

    def tree_size(self) -> int:
        """Number of committed events."""
        with self.store.session(readonly=True) as session:
            return self._head_size(session)

    @staticmethod
    def _head_size(session: Session) -> int:
        size = session.execute(
            select(AuditHead.tree_size).where(AuditHead.id == _HEAD_ID)
        ).scalar_one_or_none()
        if size is None:
            raise NotInitialisedError("the audit log has no head row: run `assay init`")
        return size

    def tree(self, size: int | None = None, *, check: bool = False) -> MerkleTree:
        """The Merkle tree of the first ``size`` committed events (all when None).

        Built from the stored leaf hashes; with ``check`` every leaf is recomputed from its row
        first. Raises :class:`IntegrityError` when events are missing or (with ``check``) edited.
        """
        with self.store.session(readonly=True) as session:
            head = self._head_size(session)
            size = head if size is None else size
            if not 0 <= size <= head:
                raise ValueError(f"tree size {size} out of range 0..{head}")
            if check:
                rows: Sequence[Any] = list(
                    session.scalars(
                        select(AuditEvent).where(AuditEvent.seq < size).order_by(AuditEvent.seq)
                    )
                )
            else:
                rows = session.execute(
                    select(AuditEvent.seq, AuditEvent.leaf_hash)
                    .where(AuditEvent.seq < size)
                    .order_by(AuditEvent.seq)
                ).all()
        leaves: list[bytes] = []
        for expected, row in enumerate(rows):
            if row.seq != expected:
                raise IntegrityError(f"audit event {expected} is missing: run `assay audit verify`")
            if check and hash_leaf(row.leaf_data()).hex() != row.leaf_hash:
                raise IntegrityError(
                    f"audit event {row.seq} does not match its leaf hash: run `assay audit verify`"
                )
            leaves.append(bytes.fromhex(row.leaf_hash))
        if len(leaves) != size:
            raise IntegrityError(f"audit event {len(leaves)} is missing: run `assay audit verify`")
        return MerkleTree(leaves)

    def root(self, size: int | None = None) -> bytes:
        """Merkle root of the first ``size`` events (all when None)."""
        return self.tree(size).root()

    def leaf_hash(self, seq: int) -> bytes:
        with self.store.session(readonly=True) as session:
            value = session.execute(
                select(AuditEvent.leaf_hash).where(AuditEvent.seq == seq)
            ).scalar_one_or_none()
        if value is None:
            raise IntegrityError(f"audit event {seq} is missing")
        return bytes.fromhex(value)

    def inclusion_proof(self, seq: int, size: int | None = None) -> list[bytes]:
        """Proof that event ``seq`` is in the tree of ``size`` events (all when None)."""
        tree = self.tree(size)
        return tree.inclusion_proof(seq, tree.size)

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        """Proof that the tree of ``old`` events is a prefix of the tree of ``new``."""
        tree = self.tree(new)
        return tree.consistency_proof(old, tree.size)

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint(
        self, signer: Signer, directory: str | os.PathLike[str], origin: str = "assay"
    ) -> CheckpointFile:
        """Sign the current (size, root), write it to a new file in ``directory``, record it.

        Refuses (``IntegrityError``) to sign a log whose rows no longer match their leaf hashes.
        """
        if not origin or "\n" in origin:
            raise FormatError("checkpoint origin must be one non-empty line")
        tree = self.tree(check=True)
        timestamp = utcnow()
        root = tree.root()
        signature = signer.sign(checkpoint_body(origin, tree.size, root))
        signed = CheckpointFile(origin, tree.size, root, timestamp, signer.key_id, signature)
        stem = f"checkpoint-{tree.size:010d}-{timestamp:%Y%m%dT%H%M%S%fZ}"
        path = write_new_numbered(Path(directory), stem, ".json", signed.to_json())
        with self.store.session() as session:
            session.add(
                Checkpoint(
                    origin=origin,
                    tree_size=tree.size,
                    root_hash=root.hex(),
                    created_at=timestamp,
                    key_id=signer.key_id,
                    signature=base64.b64encode(signed.signature).decode("ascii"),
                    note=path.name,
                )
            )
        log.info("audit checkpoint at size %d written to %s", tree.size, path)
        return replace(signed, path=path)

    def recorded_checkpoints(self) -> list[CheckpointFile]:
        """Checkpoints recorded in the store (the files outside it are the trust anchor)."""
        with self.store.session(readonly=True) as session:
            rows = list(session.scalars(select(Checkpoint).order_by(Checkpoint.id)))
        result = []
        for row in rows:
            try:
                result.append(CheckpointFile.from_row(row))
            except (ValueError, binascii.Error):
                log.warning("checkpoint row %d is malformed", row.id)
        return result

    # -- verification ---------------------------------------------------------------------

    def verify(
        self,
        checkpoint_paths: Iterable[str | os.PathLike[str]],
        verifier: Verifier,
        *,
        include_recorded: bool = True,
    ) -> AuditReport:
        """Check every event against its leaf hash and the log against signed checkpoints.

        ``checkpoint_paths`` are checkpoint files (kept outside the store, possibly not in its
        table); with ``include_recorded`` the store's own checkpoint rows are checked as well.
        """
        problems: list[str] = []
        warnings: list[str] = []
        with self.store.session(readonly=True) as session:
            head = session.execute(
                select(AuditHead.tree_size).where(AuditHead.id == _HEAD_ID)
            ).scalar_one_or_none()
            rows = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
            recorded_rows = (
                list(session.scalars(select(Checkpoint).order_by(Checkpoint.id)))
                if include_recorded
                else []
            )

        # 1. Every row against its own leaf hash, and seq continuity.
        leaves: list[bytes] = []
        expected = 0
        for row in rows:
            if row.seq != expected:
                problems.append(_missing(expected, row.seq))
                expected = row.seq
            try:
                computed = hash_leaf(row.leaf_data())
            except (FormatError, ValueError, TypeError) as exc:
                problems.append(f"audit event {row.seq} cannot be re-hashed: {exc}")
                computed = bytes(HASH_SIZE)
            else:
                if computed.hex() != row.leaf_hash:
                    problems.append(
                        f"audit event {row.seq} was modified: its content does not match its "
                        "leaf hash"
                    )
            leaves.append(computed)
            expected += 1
        if head is None:
            problems.append("the audit head row is missing")
        elif head > expected:
            problems.append(_missing(expected, head) + " (after the last row)")
        elif head < expected:
            problems.append(f"the audit head says {head} events but rows reach seq {expected - 1}")
        tree = MerkleTree(leaves)

        # 2. Checkpoints: signature, then the root at their size.
        candidates: list[CheckpointFile] = []
        for path in checkpoint_paths:
            try:
                candidates.append(CheckpointFile.load(path))
            except FormatError as exc:
                problems.append(f"checkpoint {path}: {exc}")
        seen = {c._identity() for c in candidates}
        for row in recorded_rows:
            try:
                cp = CheckpointFile.from_row(row)
            except (ValueError, binascii.Error):
                problems.append(f"recorded checkpoint {row.id} is malformed")
                continue
            if cp._identity() not in seen:
                seen.add(cp._identity())
                candidates.append(replace(cp, path=Path(f"<store checkpoint {row.id}>")))
        if not candidates:
            warnings.append(
                "no signed checkpoint to check against: only internal consistency was verified"
            )

        trusted: list[CheckpointFile] = []
        checked: list[str] = []
        for cp in candidates:
            checked.append(cp.name)
            try:
                signature_ok = bool(verifier(cp.key_id, cp.signature, cp.body()))
            except AssayError as exc:
                problems.append(f"checkpoint {cp.name}: cannot check its signature: {exc}")
                continue
            if not signature_ok:
                problems.append(
                    f"checkpoint {cp.name}: signature does not verify with key {cp.key_id}"
                )
                continue
            trusted.append(cp)
            if cp.tree_size > len(leaves):
                problems.append(
                    f"checkpoint {cp.name} signed {cp.tree_size} events but the log has "
                    f"{len(leaves)}: the log was truncated"
                )
            elif tree.root(cp.tree_size) != cp.root_hash:
                problems.append(
                    f"checkpoint {cp.name}: the log's root at size {cp.tree_size} differs from "
                    "the signed root: history was rewritten"
                )

        # 3. Consistency between successive trusted checkpoints.
        trusted.sort(key=lambda c: (c.tree_size, c.timestamp))
        for older, newer in zip(trusted, trusted[1:], strict=False):
            if older.tree_size == 0:
                if older.root_hash != EMPTY_ROOT:
                    problems.append(f"checkpoint {older.name}: size 0 with a non-empty root")
                continue
            if older.tree_size == newer.tree_size:
                if older.root_hash != newer.root_hash:
                    problems.append(
                        f"checkpoints {older.name} and {newer.name} sign different roots for "
                        f"size {older.tree_size}: the log forked"
                    )
                continue
            if newer.tree_size > len(leaves):
                continue  # reported above; no proof can be built from a truncated log
            proof = tree.consistency_proof(older.tree_size, newer.tree_size)
            try:
                verify_consistency(
                    older.tree_size, newer.tree_size, proof, older.root_hash, newer.root_hash
                )
            except ProofError as exc:
                problems.append(
                    f"checkpoints {older.name} and {newer.name} are not consistent: {exc}"
                )

        return AuditReport(
            ok=not problems,
            tree_size=len(leaves),
            problems=problems,
            checked_checkpoints=len(checked),
            checkpoints=checked,
            warnings=warnings,
        )


def _missing(first: int, stop: int) -> str:
    if stop - first == 1:
        return f"audit event {first} is missing"
    return f"audit events {first}..{stop - 1} are missing"

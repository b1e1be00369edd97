"""Tables of assay's store (SQLAlchemy 2 declarative).

Every timestamp is timezone-aware UTC in Python. PostgreSQL keeps them as ``timestamptz``; SQLite
keeps naive UTC text, and :class:`UTCDateTime` puts the timezone back on the way out.

The schema itself is created by the Alembic migrations in ``assay.store.migrations``; keep
both in step (``tests/store/test_store.py`` compares them).

``String(n)`` only for values of a shape assay makes itself (hex SHA-256 digests, generated key and
incident ids, fixed words such as states); anything a person, a playbook or MLflow supplies (names,
versions, aliases, actors, reasons, paths, playbook and step ids, ``sha256:`` digests) is ``Text``:
PostgreSQL enforces declared lengths (migration 0003).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from assay.core.states import BAD_STATES, STATES  # noqa: F401  (re-exported for older imports)
from assay.store.audit_leaf import leaf_data  # noqa: F401  (re-exported)

__all__ = [
    "AliasMove",
    "Artifact",
    "ArtifactState",
    "Freeze",
    "Incident",
    "IncidentStep",
    "Lineage",
    "StateChange",
    "WatermarkRow",
    "WatermarkSketch",
    "AuditEvent",
    "AuditHead",
    "Base",
    "Checkpoint",
    "Key",
    "ServeAlert",
    "ServeClient",
    "ServeMark",
    "ServeQuery",
    "Signature",
    "UTCDateTime",
    "utcnow",
]


def utcnow() -> datetime:
    """Now, timezone-aware UTC, microsecond precision (what PostgreSQL keeps)."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend; naive datetimes are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(f"naive datetime {value.isoformat()} given: use timezone-aware UTC")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}


class Key(Base):
    """A public key assay knows, with its validity window and revocation state."""

    __tablename__ = "keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex sha256 of DER SPKI
    name: Mapped[str] = mapped_column(Text)
    key_type: Mapped[str] = mapped_column(String(32))  # e.g. ecdsa-p256, ed25519
    public_pem: Mapped[str] = mapped_column(Text)
    has_private: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str | None] = mapped_column(Text)  # keyring, env, imported...
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    not_before: Mapped[datetime | None]
    not_after: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoke_reason: Mapped[str | None] = mapped_column(Text)
    compromised_since: Mapped[datetime | None]


class Artifact(Base):
    """A thing assay signs: a model version, a dataset version, a plain path."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("kind", "name", "version", name="uq_artifacts_kind_name_version"),
        # NULL versions are distinct in a plain unique constraint: one unversioned row per name.
        Index(
            "uq_artifacts_kind_name_unversioned",
            "kind",
            "name",
            unique=True,
            sqlite_where=text("version IS NULL"),
            postgresql_where=text("version IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # model, dataset, path
    name: Mapped[str] = mapped_column(Text)
    version: Mapped[str | None] = mapped_column(Text)
    uri: Mapped[str | None] = mapped_column(Text)
    manifest_root: Mapped[str | None] = mapped_column(String(64))  # hex sha256
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Signature(Base):
    """A signature bundle assay recorded, over a manifest root, made with a known key."""

    __tablename__ = "signatures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    artifact_id: Mapped[int | None] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), index=True
    )
    subject: Mapped[str] = mapped_column(Text)
    manifest_root: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(ForeignKey("keys.key_id"), index=True)
    bundle: Mapped[str] = mapped_column(Text)
    # When assay recorded it: revocation decisions compare this, never a claimed signing time.
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """One leaf of the audit log's Merkle tree; ``seq`` is the leaf index."""

    __tablename__ = "audit_events"
    # A subject's newest event (the decision's state cross-check) is one index lookup (0006).
    __table_args__ = (Index("ix_audit_events_subject_seq", "subject", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[datetime]
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(100), index=True)
    subject: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON object
    leaf_hash: Mapped[str] = mapped_column(String(64))  # hex of RFC 9162 leaf hash

    @property
    def payload_dict(self) -> dict[str, Any]:
        return json.loads(self.payload)

    def leaf_data(self) -> bytes:
        """The bytes hashed into the leaf: canonical JSON of the event's fields."""
        return leaf_data(
            seq=self.seq,
            ts=self.ts,
            actor=self.actor,
            action=self.action,
            subject=self.subject,
            payload=self.payload_dict,
        )


class AuditHead(Base):
    """The single row (id 1) that serialises audit appends across processes."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    tree_size: Mapped[int] = mapped_column(Integer, default=0)


class Checkpoint(Base):
    """A signed (tree size, root) statement; the file written outside the store is the anchor."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    origin: Mapped[str] = mapped_column(Text)
    tree_size: Mapped[int] = mapped_column(Integer, index=True)
    root_hash: Mapped[str] = mapped_column(String(64))  # hex
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)  # base64
    note: Mapped[str | None] = mapped_column(Text)  # the checkpoint file's name or a remark


# -- registry layer (migration 0002) --------------------------------------------------------


class ArtifactState(Base):
    """Registry fields of a model or dataset version (one row per artifact)."""

    __tablename__ = "artifact_states"

    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(32), default="registered")
    reason: Mapped[str | None] = mapped_column(Text)
    incident_id: Mapped[str | None] = mapped_column(Text)
    # 'pending' while a registration is half way; only 'complete' versions can serve.
    status: Mapped[str] = mapped_column(String(16), default="complete")
    run_id: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)  # MLflow source URI of the version
    labels: Mapped[str] = mapped_column(Text, default="[]")  # JSON list, e.g. ["robust"]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StateChange(Base):
    """History of every state change (MLflow keeps none)."""

    __tablename__ = "state_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), index=True
    )
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    incident_id: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasMove(Base):
    """History of every serving-alias move made through assay."""

    __tablename__ = "alias_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(Text, index=True)
    alias: Mapped[str] = mapped_column(Text)
    from_version: Mapped[str | None] = mapped_column(Text)
    to_version: Mapped[str | None] = mapped_column(Text)  # None: alias deleted
    via: Mapped[str] = mapped_column(String(32))  # register, promote, rollback
    reason: Mapped[str | None] = mapped_column(Text)
    incident_id: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Lineage(Base):
    """An edge: ``child`` was trained on (dataset) or fine-tuned from (model) ``parent``."""

    __tablename__ = "lineage"
    __table_args__ = (UniqueConstraint("child_id", "parent_id", name="uq_lineage_edge"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    child_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), index=True
    )
    parent_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), index=True
    )
    relation: Mapped[str] = mapped_column(String(32))  # trained-on, fine-tuned-from


class Freeze(Base):
    """A frozen model: promotions and alias moves other than rollback are refused."""

    __tablename__ = "freezes"

    model_name: Mapped[str] = mapped_column(Text, primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    incident_id: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class WatermarkRow(Base):
    """The watermark embedded in a registered model version (record only, never the secret)."""

    __tablename__ = "watermarks"

    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    secret_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    record: Mapped[str] = mapped_column(Text)  # JSON of the WatermarkRecord
    shapes: Mapped[str] = mapped_column(Text)  # JSON list of marked tensor shapes (trace index)
    parameters: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WatermarkSketch(Base):
    """The trace index: a few marked values of one tensor per shape a version marked (0005).

    ``values`` are :data:`assay.watermark.sketch.SKETCH_SIZE` little-endian float32 values of
    the version's first marked tensor of ``shape`` (its stored orientation, ``"768x2304"``) at the
    fixed positions ``sketch_indices(shape)``: ranking 10,000 versions reads these rows only.
    """

    __tablename__ = "watermark_sketches"
    __table_args__ = (UniqueConstraint("artifact_id", "shape", name="uq_watermark_sketches_shape"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), index=True
    )
    secret_fingerprint: Mapped[str] = mapped_column(String(64))
    shape: Mapped[str] = mapped_column(String(255), index=True)
    tensor: Mapped[str] = mapped_column(Text)
    values: Mapped[bytes] = mapped_column(LargeBinary)


class Incident(Base):
    """One run of an incident playbook."""

    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    playbook_id: Mapped[str] = mapped_column(Text)
    playbook_digest: Mapped[str] = mapped_column(Text)
    playbook_source: Mapped[str] = mapped_column(Text)  # the YAML as run, for resume
    inputs: Mapped[str] = mapped_column(Text)  # canonical JSON
    status: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)  # why it stopped (failed step, approval...)
    actor: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class IncidentStep(Base):
    """The recorded status and outputs of one step (or one foreach item) of an incident."""

    __tablename__ = "incident_steps"
    __table_args__ = (
        UniqueConstraint("incident_id", "step_id", "item_index", name="uq_incident_step_item"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    step_id: Mapped[str] = mapped_column(Text)
    item_index: Mapped[int] = mapped_column(Integer, default=-1)  # -1: not a foreach item
    status: Mapped[str] = mapped_column(String(32))
    outputs: Mapped[str | None] = mapped_column(Text)  # JSON
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ServeClient(Base):
    """An API client of ``assay serve``: its secret is kept only as a SHA-256 digest."""

    __tablename__ = "serve_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)  # hex sha256 of the secret
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    blocked_at: Mapped[datetime | None]  # set by the model-extraction playbook
    throttle: Mapped[str | None] = mapped_column(Text)  # JSON {"rate_per_second", "burst"}
    reason: Mapped[str | None] = mapped_column(Text)


class ServeQuery(Base):
    """One answered (or refused) query: append-only, pruned only by retention."""

    __tablename__ = "serve_queries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(Text, index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    model_name: Mapped[str] = mapped_column(Text)
    version: Mapped[str | None] = mapped_column(Text)
    status: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    input_digest: Mapped[str | None] = mapped_column(String(64))
    answer_digest: Mapped[str | None] = mapped_column(String(64))
    sample: Mapped[str | None] = mapped_column(Text)  # JSON of the input, for sampled queries


class ServeAlert(Base):
    """A finding of the serving guard (extraction detector, volume), for `assay serve alerts`."""

    __tablename__ = "serve_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(Text, index=True)
    model_name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))  # extraction, volume
    detail: Mapped[str] = mapped_column(Text)  # JSON evidence
    status: Mapped[str] = mapped_column(String(16), default="open")  # open, handled
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ServeMark(Base):
    """An answer watermark: the input and the keyed alternative answer that was returned."""

    __tablename__ = "serve_marks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(Text, index=True)
    version: Mapped[str] = mapped_column(Text)
    client: Mapped[str] = mapped_column(Text)
    input_digest: Mapped[str] = mapped_column(String(64))
    input: Mapped[str] = mapped_column(Text)  # JSON list of the row's features
    answer: Mapped[str] = mapped_column(Text)  # JSON: the marked answer returned
    original: Mapped[str] = mapped_column(Text)  # JSON: the model's own answer
    at: Mapped[datetime] = mapped_column(default=utcnow)

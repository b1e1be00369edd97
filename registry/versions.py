"""Model and dataset versions as assay's store knows them: lookups, records, state changes.

The store is the source of truth (DESIGN §4): MLflow tags only mirror it. Every state change is
kept in ``state_changes`` and appended to the audit log in the same transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assay.core.errors import AssayError, NotFoundError
from assay.store.models import (
    STATES,
    Artifact,
    ArtifactState,
    Lineage,
    Signature,
    StateChange,
    utcnow,
)
from assay.store.version_record import (
    KIND_LABEL,
    VersionRecord,
    display,
    record_from_row,
    version_key,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.registry.facade import Registry


def find_artifact(session: Session, kind: str, name: str, version: str | None) -> Artifact | None:
    query = select(Artifact).where(Artifact.kind == kind, Artifact.name == name)
    if version is None:
        rows = list(session.scalars(query))
        rows = [r for r in rows if _state(session, r).status == "complete"]
        return max(rows, key=lambda r: version_key(r.version), default=None)
    return session.scalar(query.where(Artifact.version == str(version)))


def subject_artifact(session: Session, subject: str) -> Artifact | None:
    """The artifact a ``models:/NAME/V`` or ``dataset:NAME@V`` subject names, else None."""
    from assay.store.version_record import parse_display

    parsed = parse_display(subject)
    return find_artifact(session, *parsed) if parsed else None


def require_artifact(session: Session, kind: str, name: str, version: str | None) -> Artifact:
    """The artifact or a NotFoundError naming what exists."""
    artifact = find_artifact(session, kind, name, version)
    if artifact is not None:
        return artifact
    known = session.scalars(
        select(Artifact.version).where(Artifact.kind == kind, Artifact.name == name)
    )
    versions = sorted((v for v in known if v), key=version_key)
    what = KIND_LABEL.get(kind, kind)
    if not versions:
        raise NotFoundError(f"no {what} named {name!r} is registered with assay")
    raise NotFoundError(
        f"{what} {name!r} has no version {version} (registered: {', '.join(versions)})"
    )


def _state(session: Session, artifact: Artifact) -> ArtifactState:
    state = session.get(ArtifactState, artifact.id)
    if state is None:  # artifacts signed before registry tables existed, or plain paths
        state = ArtifactState(
            artifact_id=artifact.id, state="registered", status="complete", labels="[]"
        )
    return state


def state_row(session: Session, artifact: Artifact) -> ArtifactState:
    """The artifact's state row, added to ``session`` if it has none yet (to be changed).

    Read afresh and locked (``FOR UPDATE``) so that concurrent changes of one version serialise
    on PostgreSQL as they do on SQLite, each seeing the other's result (no lost update, no change
    recorded twice)."""
    row = session.get(ArtifactState, artifact.id, with_for_update=True, populate_existing=True)
    if row is None:  # artifacts signed before the registry tables existed, or plain paths
        row = _state(session, artifact)
        session.add(row)
    return row


def latest_signature(session: Session, artifact_id: int, prefix: str = "") -> Signature | None:
    """The newest signature row of an artifact whose subject starts with ``prefix``."""
    rows = session.scalars(
        select(Signature).where(Signature.artifact_id == artifact_id).order_by(Signature.id.desc())
    )
    for row in rows:
        if row.subject.startswith(prefix):
            return row
    return None


def record_of(session: Session, artifact: Artifact) -> VersionRecord:
    state = _state(session, artifact)
    signature = latest_signature(
        session, artifact.id, display(artifact.kind, artifact.name, artifact.version)
    )
    parents = session.execute(
        select(Artifact, Lineage.relation)
        .join(Lineage, Lineage.parent_id == Artifact.id)
        .where(Lineage.child_id == artifact.id)
    ).all()
    return record_from_row(
        artifact.kind,
        artifact.name,
        artifact.version,
        uri=artifact.uri,
        manifest_root=artifact.manifest_root,
        created_at=artifact.created_at,
        state=state_fields(state),
        key_id=signature.key_id if signature else None,
        lineage=((a.name, a.version, rel) for a, rel in parents),
    )


def state_fields(state: ArtifactState | None) -> tuple[Any, ...] | None:
    """An ORM state row as :func:`record_from_row` takes it."""
    if state is None:
        return None
    return (
        state.state,
        state.status,
        state.reason,
        state.incident_id,
        state.run_id,
        state.source,
        state.labels,
    )


def list_records(
    session: Session, kind: str, name: str | None = None, *, complete_only: bool = True
) -> list[VersionRecord]:
    query = select(Artifact).where(Artifact.kind == kind)
    if name is not None:
        query = query.where(Artifact.name == name)
    records = [record_of(session, a) for a in session.scalars(query)]
    if complete_only:
        records = [r for r in records if r.status == "complete"]
    return sorted(records, key=lambda r: (r.name, version_key(r.version)))


def next_version(session: Session, kind: str, name: str) -> str:
    versions = session.scalars(
        select(Artifact.version).where(Artifact.kind == kind, Artifact.name == name)
    )
    return str(max((version_key(v) for v in versions), default=0) + 1)


def set_state(
    registry: Registry,
    session: Session,
    artifact: Artifact,
    state: str,
    *,
    reason: str | None,
    incident_id: str | None = None,
) -> bool:
    """Move ``artifact`` to ``state`` (recorded and audited); False if it already was there."""
    if state not in STATES:
        raise AssayError(f"unknown state {state!r}: use one of {', '.join(STATES)}")
    row = state_row(session, artifact)
    if row.state == state:
        return False
    previous = row.state
    row.state, row.reason, row.incident_id, row.updated_at = state, reason, incident_id, utcnow()
    session.add(
        StateChange(
            artifact_id=artifact.id,
            from_state=previous,
            to_state=state,
            reason=reason,
            incident_id=incident_id,
            actor=registry.settings.actor,
            at=utcnow(),
        )
    )
    registry.record(
        session,
        f"{artifact.kind}.state",
        display(artifact.kind, artifact.name, artifact.version),
        {"from": previous, "to": state, "reason": reason, "incident_id": incident_id},
    )
    return True

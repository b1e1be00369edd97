"""The incident recorder backed by assay's store: every step result is committed before the next.

Each status change is one transaction that also appends an audit event, so an incident's whole
timeline is in the tamper-evident log. The playbook text as run is kept with the incident, so
``assay incident resume`` re-runs exactly what was started (the engine checks its digest).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assay.core.canonical import canonical_json, iso_utc
from assay.core.errors import NotFoundError
from assay.incident._records import DONE_STATUSES, FAILED, Incident, StepRecord, new_incident_id
from assay.store.models import Incident as IncidentRow
from assay.store.models import IncidentStep, utcnow

if TYPE_CHECKING:
    from assay.registry.facade import Registry

_NO_ITEM = -1


def _iso(moment: datetime | None) -> str | None:
    return iso_utc(moment) if moment else None


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)


class SqlRecorder:
    """``IncidentRecorder`` over the store (SQLite or PostgreSQL)."""

    def __init__(self, registry: Registry, playbook_source: str = "") -> None:
        self.registry = registry
        self.playbook_source = playbook_source

    def create_incident(
        self, playbook_id: str, playbook_digest: str, inputs: dict[str, Any]
    ) -> str:
        incident_id = new_incident_id()
        now = utcnow()
        with self.registry.store.session() as session:
            session.add(
                IncidentRow(
                    id=incident_id,
                    playbook_id=playbook_id,
                    playbook_digest=playbook_digest,
                    playbook_source=self.playbook_source,
                    inputs=canonical_json(inputs).decode("utf-8"),
                    status="planned",
                    actor=self.registry.settings.actor,
                    created_at=now,
                    updated_at=now,
                )
            )
            self.registry.record(
                session,
                "incident.open",
                f"incident:{incident_id}",
                {"playbook": playbook_id, "playbook_digest": playbook_digest, "inputs": inputs},
            )
        return incident_id

    def _row(self, session: Any, incident_id: str) -> IncidentRow:
        row = session.get(IncidentRow, incident_id)
        if row is None:
            raise NotFoundError(f"no incident {incident_id!r}: see `assay incident list`")
        return row

    def get_incident(self, incident_id: str) -> Incident:
        with self.registry.store.session(readonly=True) as session:
            return _to_incident(self._row(session, incident_id))

    def playbook_text(self, incident_id: str) -> str:
        with self.registry.store.session(readonly=True) as session:
            return self._row(session, incident_id).playbook_source

    def list_incidents(self) -> list[Incident]:
        with self.registry.store.session(readonly=True) as session:
            rows = session.scalars(select(IncidentRow).order_by(IncidentRow.created_at))
            return [_to_incident(r) for r in rows]

    def set_status(self, incident_id: str, status: str, detail: str | None = None) -> None:
        with self.registry.store.session() as session:
            row = self._row(session, incident_id)
            if row.status == status and row.detail == detail:
                return
            row.status, row.detail, row.updated_at = status, detail, utcnow()
            self.registry.record(
                session,
                "incident.status",
                f"incident:{incident_id}",
                {"status": status, "detail": detail},
            )

    def record_step(
        self,
        incident_id: str,
        step_id: str,
        item_index: int | None,
        status: str,
        *,
        outputs: dict[str, Any] | None = None,
        error: str | None = None,
        started_at: str | None = None,
        finished_at: str | None = None,
    ) -> None:
        index = _NO_ITEM if item_index is None else item_index
        with self.registry.store.session() as session:
            self._row(session, incident_id)
            row = session.scalar(
                select(IncidentStep).where(
                    IncidentStep.incident_id == incident_id,
                    IncidentStep.step_id == step_id,
                    IncidentStep.item_index == index,
                )
            )
            if row is None:
                row = IncidentStep(incident_id=incident_id, step_id=step_id, item_index=index)
                session.add(row)
            row.status = status
            row.outputs = (
                json.dumps(outputs, sort_keys=True, default=str) if outputs is not None else None
            )
            row.error = error
            row.started_at = _parse(started_at)
            row.finished_at = _parse(finished_at)
            if status in DONE_STATUSES or status == FAILED:
                self.registry.record(
                    session,
                    "incident.step",
                    f"incident:{incident_id}",
                    {"step": step_id, "item": item_index, "status": status, "error": error},
                )

    def get_steps(self, incident_id: str) -> list[StepRecord]:
        with self.registry.store.session(readonly=True) as session:
            rows = session.scalars(
                select(IncidentStep)
                .where(IncidentStep.incident_id == incident_id)
                .order_by(IncidentStep.id)
            )
            return [
                StepRecord(
                    incident_id=r.incident_id,
                    step_id=r.step_id,
                    item_index=None if r.item_index == _NO_ITEM else r.item_index,
                    status=r.status,
                    outputs=json.loads(r.outputs) if r.outputs else None,
                    error=r.error,
                    started_at=_iso(r.started_at),
                    finished_at=_iso(r.finished_at),
                )
                for r in rows
            ]


def _to_incident(row: IncidentRow) -> Incident:
    return Incident(
        id=row.id,
        playbook_id=row.playbook_id,
        playbook_digest=row.playbook_digest,
        inputs=json.loads(row.inputs),
        status=row.status,
        created_at=iso_utc(row.created_at),
        updated_at=iso_utc(row.updated_at),
        detail=row.detail,
    )

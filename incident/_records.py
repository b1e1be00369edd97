"""Incident records: what a playbook run did, step by step.

An ``Incident`` is one run of one playbook (its id, the digest of the playbook text it ran, the inputs
it was given and where it stands). A ``StepRecord`` is one step's result, or one item's result for a
``foreach`` step (``item_index`` 0, 1, ...; the step's own record has ``item_index=None``).

These are plain values: the engine writes them through an ``IncidentRecorder`` (memory, a JSON file,
or the SQL store) and the report renders them.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

# Where an incident stands.
PLANNED = "planned"
RUNNING = "running"
WAITING_APPROVAL = "waiting-approval"
FAILED = "failed"
COMPLETED = "completed"
INCIDENT_STATUSES = (PLANNED, RUNNING, WAITING_APPROVAL, FAILED, COMPLETED)

# Where a step (or one foreach item) stands. RUNNING means "started, not known to have finished":
# after a crash, resume runs it again (actions are idempotent).
SUCCEEDED = "succeeded"
SUCCEEDED_WITH_WARNINGS = "succeeded-with-warnings"
SKIPPED = "skipped"
STEP_STATUSES = (RUNNING, SUCCEEDED, SUCCEEDED_WITH_WARNINGS, FAILED, SKIPPED, WAITING_APPROVAL)
DONE_STATUSES = frozenset({SUCCEEDED, SUCCEEDED_WITH_WARNINGS, SKIPPED})


def utcnow() -> str:
    """Now, as an ISO 8601 UTC timestamp with microseconds (sortable)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_incident_id() -> str:
    """A readable, unique incident id: ``inc-20240501-031502-1a2b3c``."""
    now = datetime.now(timezone.utc)
    return f"inc-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Incident:
    id: str
    playbook_id: str
    playbook_digest: str
    inputs: dict[str, Any]
    status: str = PLANNED
    created_at: str = field(default_factory=utcnow)
    updated_at: str = field(default_factory=utcnow)
    detail: str | None = None  # why it stopped (failed step, waiting approval...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Incident:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class StepRecord:
    incident_id: str
    step_id: str
    item_index: int | None
    status: str
    outputs: dict[str, Any] | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})

"""One-command rollback: move a serving alias back to a safe version, exactly once.

The steps, each safe to re-run after a crash at any point (DESIGN §7):

1. **intent**: the plan (from, to, reason) is committed as an audit event ``rollback.intent``;
2. **move**: in one store transaction holding the store's write lock (so concurrent rollbacks of
   the same alias serialise): re-read the alias; if it already points at the target, nothing
   moves; if someone else moved it meanwhile, refuse; otherwise set it once and read it back;
   record the alias move, quarantine the replaced version, append ``rollback.done``.

A replaced version assay never registered (one created and aliased with plain MLflow) cannot be
identified, so it is not quarantined: the rollback still completes, and its result says so
(``not_quarantined``).

A re-run finds the unfinished intent and completes it instead of planning anew, so the alias is
never moved twice. A rollback that has completed is not repeated by accident either: rolling back
again from the version a rollback just landed on needs ``--to``.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from assay.core.errors import NotFoundError, RefusedError
from assay.registry.states import (
    MovedMeanwhile,
    alias_move_row,
    alias_subject,
    mirror_state,
    open_intents,
    set_alias_once,
)
from assay.registry.versions import find_artifact, set_state
from assay.rollback.selection import RollbackPlan, plan_rollback
from assay.store.models import BAD_STATES, ArtifactState, AuditEvent
from assay.store.store import lock_store

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from assay.registry.facade import Registry

INTENT, DONE, ABANDONED = "rollback.intent", "rollback.done", "rollback.abandoned"

#: Test-only crash hook (shared with the playbook engine): ``ASSAY_TEST_CRASH_AT=rollback:after-intent``
#: (intent committed, alias untouched) or ``rollback:after-set-alias`` (MLflow's alias set, nothing
#: of the move committed yet) ends the process with ``os._exit(137)`` as kill -9 would. It exists for
#: the crash/resume tests; never set it in production.
CRASH_ENV = "ASSAY_TEST_CRASH_AT"


def _crash_point(point: str) -> None:
    if os.environ.get(CRASH_ENV) == f"rollback:{point}":
        os._exit(137)


class NoRollbackTarget(RefusedError):
    """No eligible version: ``plan`` lists every candidate with the reason it was rejected."""

    def __init__(self, plan: RollbackPlan) -> None:
        super().__init__(plan.refusal())
        self.plan = plan


@dataclass
class RollbackResult:
    """What a rollback did (or, with ``dry_run``, would do)."""

    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    moved: bool = False
    changed: bool = False
    dry_run: bool = False
    resumed: bool = False
    rollback_id: str | None = None
    quarantined: str | None = None
    #: Why the replaced version was not quarantined (it is not registered with assay).
    not_quarantined: str | None = None
    note: str | None = None
    seconds_to_alias_moved: float | None = None
    seconds_total: float | None = None
    plan: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rollback_events(registry: Registry, subject: str) -> list[AuditEvent]:
    with registry.store.session(readonly=True) as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(
                    AuditEvent.subject == subject, AuditEvent.action.in_((INTENT, DONE, ABANDONED))
                )
                .order_by(AuditEvent.seq)
            )
        )


def _count_events(session: Session, subject: str) -> int:
    return session.scalar(
        select(func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.subject == subject, AuditEvent.action.in_((INTENT, DONE, ABANDONED)))
    )


def _open_intent(events: list[AuditEvent]) -> dict[str, Any] | None:
    """The newest rollback intent with no done/abandoned event after it."""
    pending = open_intents(events, INTENT)
    return pending[-1] if pending else None


def _last_done(events: list[AuditEvent]) -> dict[str, Any] | None:
    done = [e.payload_dict for e in events if e.action == DONE]
    return done[-1] if done else None


def rollback(
    registry: Registry,
    name: str,
    *,
    alias: str = "production",
    to: str | None = None,
    reason: str,
    require_label: str | None = None,
    avoid: tuple[str, ...] = (),
    incident_id: str | None = None,
    dry_run: bool = False,
    confirm: Callable[[RollbackPlan], bool] | None = None,
) -> RollbackResult:
    """Roll ``name@alias`` back (see the module docstring for the guarantees).

    The plan is made from a snapshot (rollback events, then MLflow's alias); when the intent is
    committed, under the store's write lock, that snapshot is checked again. If another rollback
    of the same alias started or finished meanwhile, or the alias moved, the whole decision is
    made again from the new state (which then resumes, or refuses, or finds nothing to do), so two
    concurrent rollbacks never both move the alias.
    """
    started = time.perf_counter()
    for _attempt in range(_ATTEMPTS):
        try:
            return _rollback_once(
                registry,
                name,
                alias=alias,
                to=to,
                reason=reason,
                require_label=require_label,
                avoid=avoid,
                incident_id=incident_id,
                dry_run=dry_run,
                confirm=confirm,
                started=started,
            )
        except _Stale:
            continue
    raise RefusedError(
        f"{alias_subject(name, alias)} keeps changing under concurrent rollbacks; nothing changed "
        "(re-run to see where it stands)"
    )


_ATTEMPTS = 5


class _Stale(Exception):
    """The snapshot a rollback was planned from changed before its intent was committed."""


def _rollback_once(
    registry: Registry,
    name: str,
    *,
    alias: str,
    to: str | None,
    reason: str,
    require_label: str | None,
    avoid: tuple[str, ...],
    incident_id: str | None,
    dry_run: bool,
    confirm: Callable[[RollbackPlan], bool] | None,
    started: float,
) -> RollbackResult:
    subject = alias_subject(name, alias)
    events = _rollback_events(registry, subject)
    pending = _open_intent(events)
    backend = registry.backend
    if pending is not None and not dry_run:
        result = RollbackResult(
            name, alias, pending["from"], pending["to"], resumed=True, rollback_id=pending["id"]
        )
        return _move(
            registry, result, pending.get("reason") or reason, pending.get("incident_id"), started
        )

    current = backend.get_alias(name, alias)
    if current is None:
        raise NotFoundError(
            f"model {name!r} has no alias {alias!r}: nothing serves, nothing to roll back"
        )
    if avoid and f"{name}/{current}" not in set(avoid):
        return RollbackResult(
            name, alias, current, current, note=f"{subject} serves {current}, which is not affected"
        )
    last = _last_done(events)
    if to is None and not avoid and last is not None and last.get("to") == current:
        raise RefusedError(
            f"{subject} was already rolled back to {current} ({last.get('reason')}); "
            "to go further back, choose the version with --to"
        )
    plan = plan_rollback(
        registry,
        name,
        alias=alias,
        current=current,
        to=to,
        require_label=require_label,
        avoid=avoid,
    )
    if plan.note:
        raise NotFoundError(plan.note)
    if plan.target is None:
        raise NoRollbackTarget(plan)
    result = RollbackResult(name, alias, current, plan.target, dry_run=dry_run, plan=plan.to_dict())
    if dry_run:
        result.seconds_total = time.perf_counter() - started
        return result
    if confirm is not None and not confirm(plan):
        raise RefusedError("rollback cancelled; nothing changed")

    rollback_id = uuid.uuid4().hex[:16]
    with registry.store.session() as session:
        lock_store(session)
        if (
            _count_events(session, subject) != len(events)
            or backend.get_alias(name, alias) != current
        ):
            raise _Stale
        registry.record(
            session,
            INTENT,
            subject,
            {
                "id": rollback_id,
                "from": current,
                "to": plan.target,
                "reason": reason,
                "incident_id": incident_id,
            },
        )
    result.rollback_id = rollback_id
    _crash_point("after-intent")
    return _move(registry, result, reason, incident_id, started)


def _move(
    registry: Registry, result: RollbackResult, reason: str, incident_id: str | None, started: float
) -> RollbackResult:
    """Step 2 under the store's write lock; see the module docstring."""
    name, alias, subject = result.model, result.alias, alias_subject(result.model, result.alias)
    try:
        with registry.store.session() as session:
            # Take the store's write lock first: concurrent movers of this alias wait here.
            lock_store(session)
            if _closed(session, subject, result.rollback_id):
                # A concurrent run resumed this same intent and finished it meanwhile.
                result.note = f"rollback {result.rollback_id} was finished by a concurrent run"
                result.seconds_total = time.perf_counter() - started
                return result
            registry.record(
                session,
                DONE,
                subject,
                {
                    "id": result.rollback_id,
                    "from": result.from_version,
                    "to": result.to_version,
                    "reason": reason,
                },
            )
            to_version = result.to_version or ""
            result.moved = set_alias_once(
                registry,
                name,
                alias,
                expected=result.from_version,
                version=to_version,
                after_set=lambda: _crash_point("after-set-alias"),
            )
            if result.moved:
                result.seconds_to_alias_moved = time.perf_counter() - started
            if result.moved or result.resumed:
                # Resumed and not moved: an interrupted run set the alias but died before
                # committing its record.
                session.add(
                    alias_move_row(
                        registry,
                        model=name,
                        alias=alias,
                        from_version=result.from_version,
                        to_version=to_version,
                        via="rollback",
                        reason=reason,
                        incident_id=incident_id,
                    )
                )
            replaced = None
            if result.from_version and result.from_version != result.to_version:
                replaced = find_artifact(session, "model", name, result.from_version)
                if replaced is None:
                    # Plain MLflow created it: nothing assay can identify to mark. The move
                    # still completes, so the incident is never stuck on it.
                    result.not_quarantined = (
                        f"replaced version {result.from_version} is not registered with assay: "
                        "not quarantined"
                    )
            if replaced is not None:
                state = session.get(ArtifactState, replaced.id)
                # Never downgrade: a version already marked compromised stays compromised.
                if (state is None or state.state not in BAD_STATES) and set_state(
                    registry,
                    session,
                    replaced,
                    "quarantined",
                    reason=reason,
                    incident_id=incident_id,
                ):
                    result.quarantined = result.from_version
    except MovedMeanwhile as moved:
        with registry.store.session() as session:
            registry.record(
                session, ABANDONED, subject, {"id": result.rollback_id, "found": moved.version}
            )
        raise moved.refusal(subject) from None
    result.changed = result.moved or result.quarantined is not None
    if result.quarantined:
        mirror_state(registry, name, result.quarantined, "quarantined")
    result.seconds_total = time.perf_counter() - started
    return result


def _closed(session: Session, subject: str, rollback_id: str | None) -> bool:
    """Whether rollback ``rollback_id`` already has its done/abandoned event."""
    events = session.scalars(
        select(AuditEvent).where(
            AuditEvent.subject == subject, AuditEvent.action.in_((DONE, ABANDONED))
        )
    )
    return any(e.payload_dict.get("id") == rollback_id for e in events)

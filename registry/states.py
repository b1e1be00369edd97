"""Version states, promotion, serving-alias moves and freezes.

* :func:`mark` moves a model (or dataset) version between ``registered``, ``known-good``,
  ``quarantined`` and ``compromised``. ``known-good`` is only given to a version that verifies now
  (its bytes are re-read from the artifact store) and whose lineage is clean.
* :func:`promote` points a serving alias at a version that is known-good, has clean lineage and
  verifies now; ``force`` (with a reason) overrides these checks and is recorded.
* :func:`move_alias` is the one way assay moves an alias (registration and promotion use it;
  rollback, which journals its own intent, uses the same steps: :func:`lock_store`,
  :func:`set_alias_once`, :func:`alias_move_row`, :meth:`MovedMeanwhile.refusal`,
  :func:`mirror_state`);
  it is safe to re-run after a crash at any point: the intent is committed first, the alias is set
  once and read back, and the move is recorded; a re-run completes an unfinished move and never
  moves the alias twice.
* :func:`freeze` / :func:`unfreeze`: while a model is frozen only ``assay rollback`` may move
  its aliases. ``force`` does not bypass a freeze: a freeze is the incident responder's decision,
  a forced promotion is someone else's, and the responder must lift it explicitly.

The store is the truth; the ``assay.state`` version tag in MLflow only mirrors it (best effort:
a failure to tag is logged as a warning and ``assay status`` reports the tag drift).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assay.core.errors import AssayError, IntegrityError, NotFoundError, RefusedError
from assay.core.tags import STATE_TAG
from assay.registry.versions import VersionRecord, display, record_of, require_artifact, set_state
from assay.store.models import (
    BAD_STATES,
    STATES,
    AliasMove,
    Artifact,
    ArtifactState,
    AuditEvent,
    Freeze,
    Lineage,
    StateChange,
    utcnow,
)
from assay.store.store import lock_store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from sqlalchemy.orm import Session

    from assay.registry.facade import Registry

__all__ = [
    "AliasMoveResult",
    "MovedMeanwhile",
    "alias_move_row",
    "alias_subject",
    "mirror_state",
    "set_alias_once",
    "open_intents",
    "FreezeStatus",
    "alias_history",
    "freeze",
    "frozen_row",
    "is_frozen",
    "mark",
    "move_alias",
    "promote",
    "state_history",
    "tainted_lineage",
    "tainted_lineages",
    "unfreeze",
]

log = logging.getLogger(__name__)

#: Audit actions of an alias move: intent (committed before MLflow is touched), done, abandoned.
ALIAS_INTENT, ALIAS_MOVE, ALIAS_ABANDONED, ALIAS_ADOPT = (
    "alias.intent",
    "alias.move",
    "alias.abandoned",
    "alias.adopt",
)
#: ``via`` values that may move an alias of a frozen model.
FREEZE_EXEMPT = frozenset({"rollback"})


# --- results ---------------------------------------------------------------------------------


@dataclass
class AliasMoveResult:
    """What :func:`move_alias` (and :func:`promote`) did."""

    model: str
    alias: str
    from_version: str | None
    to_version: str
    via: str
    moved: bool = False  # MLflow's alias was set by this call
    recorded: bool = False  # an AliasMove row was written by this call
    resumed: bool = False  # completed a move an earlier, interrupted call had started
    forced: bool = False
    reason: str | None = None
    incident_id: str | None = None
    state: str | None = None  # the target's state when it was promoted
    verified: bool | None = None  # whether the target verified (None: not checked)
    verify_summary: str | None = None
    note: str | None = None

    @property
    def changed(self) -> bool:
        return self.moved or self.recorded

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


@dataclass
class FreezeStatus:
    """Whether a model is frozen, and whether the last call changed that."""

    model: str
    frozen: bool
    changed: bool
    reason: str | None = None
    incident_id: str | None = None
    actor: str | None = None
    at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = self.at.isoformat(timespec="seconds") if self.at else None
        return out


# --- lineage taint ---------------------------------------------------------------------------


def tainted_lineages(session: Session, artifact_ids: Iterable[int]) -> dict[int, list[str]]:
    """For each artifact id, its ancestors (datasets and parent models, transitively) in a bad
    state, as ``dataset:NAME@V is quarantined`` / ``models:/NAME/V is compromised``, sorted.

    The one taint computation (mark, promote and rollback selection use it): two queries (every
    lineage edge, every artifact in a bad state), then a walk per id. Cycles in the lineage
    table (which assay never writes, but a database can hold) are walked once.
    """
    ids = list(artifact_ids)
    parents: dict[int, list[int]] = {}
    for child, parent in session.execute(select(Lineage.child_id, Lineage.parent_id)).all():
        parents.setdefault(child, []).append(parent)
    if not parents:
        return {i: [] for i in ids}
    bad = {
        row.id: f"{display(row.kind, row.name, row.version)} is {state}"
        for row, state in session.execute(
            select(Artifact, ArtifactState.state)
            .join(ArtifactState, ArtifactState.artifact_id == Artifact.id)
            .where(ArtifactState.state.in_(BAD_STATES))
        ).all()
    }
    result: dict[int, list[str]] = {}
    for start in ids:
        found: list[str] = []
        seen: set[int] = {start}
        stack = list(parents.get(start, []))
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node in bad:
                found.append(bad[node])
            stack.extend(parents.get(node, []))
        result[start] = sorted(found)
    return result


def tainted_lineage(session: Session, artifact_id: int) -> list[str]:
    """:func:`tainted_lineages` of one artifact."""
    return tainted_lineages(session, [artifact_id])[artifact_id]


# --- mark ------------------------------------------------------------------------------------


def _verify(registry: Registry, kind: str, name: str, version: str) -> tuple[bool, str]:
    """(ok, one-line summary) of re-reading the version's bytes now."""
    if kind == "dataset":
        from assay.registry.uri_verify import verify_dataset

        report = verify_dataset(registry, name, version)
    else:
        from assay.registry.uri_verify import verify_version

        report = verify_version(registry, name, version)
    if report.ok:
        return True, f"{report.subject} verified ({report.files} files)"
    return False, _one_line(report.summary())


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def mark(
    registry: Registry,
    name: str,
    version: str,
    state: str,
    *,
    reason: str | None,
    incident_id: str | None = None,
    kind: str = "model",
    force: bool = False,
) -> VersionRecord:
    """Set the state of a version (``kind`` model or dataset) and mirror it into MLflow.

    ``known-good`` needs a complete registration, clean lineage (no quarantined or compromised
    dataset or parent, transitively: RefusedError naming it), a verification that passes now
    (IntegrityError, exit 3, otherwise) and, for a model, a passing signed result for these bytes
    of every gate the policy's ``gates:`` section requires (RefusedError naming the missing ones;
    ``force`` with a reason overrides only this, recorded as a ``gate.override`` audit event).
    Bad states are always accepted. Re-marking a version with its current state changes nothing.
    """
    if state not in STATES:
        raise AssayError(f"unknown state {state!r}: use one of {', '.join(STATES)}")
    if kind not in ("model", "dataset"):
        raise AssayError(f"cannot mark a {kind}: only model and dataset versions have states")
    version = str(version)
    subject = display(kind, name, version)
    if state == "known-good":
        with registry.store.session(readonly=True) as session:
            artifact = require_artifact(session, kind, name, version)
            record = record_of(session, artifact)
            taint = tainted_lineage(session, artifact.id)
        if record.status != "complete":
            raise RefusedError(
                f"{subject} is a registration that never completed ({record.status}): "
                "re-run `assay register` first"
            )
        if taint:
            raise RefusedError(
                f"refusing to mark {subject} known-good: its lineage is tainted ({'; '.join(taint)})"
            )
        ok, summary = _verify(registry, kind, name, version)
        if not ok:
            raise IntegrityError(f"refusing to mark {subject} known-good: {summary}")
    if force and not (reason and reason.strip()):
        raise AssayError("--force needs --reason: a forced known-good is recorded with its reason")
    with registry.store.session() as session:
        artifact = require_artifact(session, kind, name, version)
        if state == "known-good" and kind == "model":
            from assay.registry.gate_evidence import missing_gates

            missing = missing_gates(registry, session, artifact)
            if missing and not force:
                raise RefusedError(
                    f"refusing to mark {subject} known-good: the policy's gates have not passed "
                    f"for these bytes: {'; '.join(missing)} (`assay gate run {subject}`, or "
                    "--force --reason)"
                )
            if missing:
                registry.record(
                    session, "gate.override", subject, {"missing": missing, "reason": reason}
                )
        set_state(registry, session, artifact, state, reason=reason, incident_id=incident_id)
        record = record_of(session, artifact)
    if kind == "model":  # also when unchanged: repairs a tag an earlier failure left stale
        mirror_state(registry, name, version, state)
    return record


def mirror_state(registry: Registry, name: str, version: str, state: str) -> None:
    """Mirror a model version's state into its ``assay.state`` tag; best effort: the store is the
    truth, a failure is logged as a warning and `assay status` reports the stale tag."""
    try:
        registry.backend.set_version_tag(name, version, STATE_TAG, state)
    except (AssayError, ImportError, OSError) as exc:
        log.warning(
            "recorded %s as %s, but could not tag it in MLflow (%s); `assay status` will show "
            "the tag as drift",
            display("model", name, version),
            state,
            exc,
        )


def state_history(
    registry: Registry, name: str, version: str, *, kind: str = "model"
) -> list[dict[str, Any]]:
    """Every state change of a version, oldest first."""
    with registry.store.session(readonly=True) as session:
        artifact = require_artifact(session, kind, name, str(version))
        rows = session.scalars(
            select(StateChange)
            .where(StateChange.artifact_id == artifact.id)
            .order_by(StateChange.id)
        )
        return [
            {
                "from": r.from_state,
                "to": r.to_state,
                "reason": r.reason,
                "incident_id": r.incident_id,
                "actor": r.actor,
                "at": r.at.isoformat(timespec="seconds"),
            }
            for r in rows
        ]


# --- freeze ----------------------------------------------------------------------------------


def frozen_row(session: Session, name: str) -> Freeze | None:
    return session.get(Freeze, name)


def is_frozen(session: Session, name: str) -> bool:
    """Whether ``name`` is frozen (only rollback may move its aliases)."""
    return frozen_row(session, name) is not None


def _frozen_message(name: str, row: Freeze) -> str:
    return (
        f"model {name} is frozen ({row.reason}): only `assay rollback` may move its aliases; "
        f"`assay unfreeze {name}` first"
    )


def _require_model(session: Session, name: str) -> None:
    if (
        session.scalar(
            select(Artifact.id).where(Artifact.kind == "model", Artifact.name == name).limit(1)
        )
        is None
    ):
        raise NotFoundError(f"no model named {name!r} is registered with assay")


def freeze(
    registry: Registry, name: str, *, reason: str, incident_id: str | None = None
) -> FreezeStatus:
    """Freeze ``name``: promotions and alias moves other than rollback are refused (idempotent)."""
    if not reason or not str(reason).strip():
        raise AssayError("a freeze needs a reason")
    with registry.store.session() as session:
        # Serialise check-then-insert: two incidents freezing the same model at once must not
        # both insert (PostgreSQL would refuse the second with a duplicate key).
        lock_store(session)
        _require_model(session, name)
        row = frozen_row(session, name)
        changed = row is None
        if row is None:
            row = Freeze(
                model_name=name,
                reason=reason,
                incident_id=incident_id,
                actor=registry.settings.actor,
                at=utcnow(),
            )
            session.add(row)
            registry.record(
                session,
                "model.freeze",
                f"models:/{name}",
                {"reason": reason, "incident_id": incident_id},
            )
        return FreezeStatus(name, True, changed, row.reason, row.incident_id, row.actor, row.at)


def unfreeze(registry: Registry, name: str, *, reason: str | None = None) -> FreezeStatus:
    """Lift a freeze (idempotent: unfreezing a model that is not frozen changes nothing)."""
    with registry.store.session() as session:
        lock_store(session)
        _require_model(session, name)
        row = frozen_row(session, name)
        if row is None:
            return FreezeStatus(name, False, False, reason)
        payload = {
            "reason": reason,
            "frozen_reason": row.reason,
            "frozen_incident_id": row.incident_id,
            "frozen_by": row.actor,
        }
        session.delete(row)
        registry.record(session, "model.unfreeze", f"models:/{name}", payload)
        return FreezeStatus(name, False, True, reason, actor=registry.settings.actor, at=utcnow())


# --- alias moves -----------------------------------------------------------------------------


def alias_subject(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"


def open_intents(events: Iterable[AuditEvent], intent_action: str) -> list[dict[str, Any]]:
    """Payloads of the ``intent_action`` events with no later event carrying the same ``id``
    (done or abandoned), oldest first. ``events`` are one subject's, in log order."""
    open_: dict[str, dict[str, Any]] = {}
    for event in events:
        payload = event.payload_dict
        if event.action == intent_action:
            open_[payload["id"]] = payload
        else:
            open_.pop(payload.get("id", ""), None)
    return list(open_.values())


def _open_intents(session: Session, subject: str) -> list[dict[str, Any]]:
    """Alias-move intents no ``alias.move`` / ``alias.abandoned`` event closed, oldest first."""
    events = session.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.subject == subject,
            AuditEvent.action.in_((ALIAS_INTENT, ALIAS_MOVE, ALIAS_ABANDONED)),
        )
        .order_by(AuditEvent.seq)
    )
    return open_intents(events, ALIAS_INTENT)


def last_move(session: Session, name: str, alias: str) -> AliasMove | None:
    """The newest recorded move of ``name@alias``."""
    return session.scalar(
        select(AliasMove)
        .where(AliasMove.model_name == name, AliasMove.alias == alias)
        .order_by(AliasMove.id.desc())
        .limit(1)
    )


def alias_history(registry: Registry, name: str, alias: str | None = None) -> list[dict[str, Any]]:
    """Every recorded alias move of ``name`` (of one ``alias`` if given), oldest first."""
    with registry.store.session(readonly=True) as session:
        query = select(AliasMove).where(AliasMove.model_name == name)
        if alias is not None:
            query = query.where(AliasMove.alias == alias)
        return [
            {
                "alias": m.alias,
                "from": m.from_version,
                "to": m.to_version,
                "via": m.via,
                "reason": m.reason,
                "incident_id": m.incident_id,
                "actor": m.actor,
                "at": m.at.isoformat(timespec="seconds"),
            }
            for m in session.scalars(query.order_by(AliasMove.id))
        ]


def _record_move(
    registry: Registry,
    session: Session,
    intent: dict[str, Any],
    *,
    moved: bool,
    resumed: bool = False,
) -> None:
    session.add(
        alias_move_row(
            registry,
            model=intent["model"],
            alias=intent["alias"],
            from_version=intent["from"],
            to_version=intent["to"],
            via=intent["via"],
            reason=intent.get("reason"),
            incident_id=intent.get("incident_id"),
        )
    )
    registry.record(
        session,
        ALIAS_MOVE,
        alias_subject(intent["model"], intent["alias"]),
        {**intent, "moved": moved, "resumed": resumed},
    )


class MovedMeanwhile(Exception):
    """The alias was moved by someone else between planning and moving (carries the version)."""

    def __init__(self, version: str | None) -> None:
        super().__init__(version)
        self.version = version

    def refusal(self, subject: str) -> RefusedError:
        """The one wording of this refusal, for every mover of an alias."""
        return RefusedError(
            f"{subject} was moved to {self.version} by someone else meanwhile; nothing changed "
            "(re-run to try again)"
        )


def alias_move_row(
    registry: Registry,
    *,
    model: str,
    alias: str,
    from_version: str | None,
    to_version: str,
    via: str,
    reason: str | None,
    incident_id: str | None,
) -> AliasMove:
    """The ``AliasMove`` record of one move, by the acting user, now."""
    return AliasMove(
        model_name=model,
        alias=alias,
        from_version=from_version,
        to_version=to_version,
        via=via,
        reason=reason,
        incident_id=incident_id,
        actor=registry.settings.actor,
        at=utcnow(),
    )


def set_alias_once(
    registry: Registry,
    name: str,
    alias: str,
    *,
    expected: str | None,
    version: str,
    after_set: Callable[[], None] | None = None,
) -> bool:
    """Point ``name@alias`` from ``expected`` at ``version`` once; the caller holds the store's
    write lock (:func:`lock_store`) in the transaction that records the move.

    Returns False (nothing set) when the alias already points at ``version``; raises
    :class:`MovedMeanwhile` when it points anywhere but ``expected``. Otherwise sets it, calls
    ``after_set`` (still inside the caller's transaction: nothing of the move is committed yet),
    reads it back (AssayError if MLflow did not keep it) and returns True.
    """
    backend = registry.backend
    now = backend.get_alias(name, alias)
    if now == version:
        return False
    if now != expected:
        raise MovedMeanwhile(now)
    backend.set_alias(name, alias, version)
    if after_set is not None:
        after_set()
    seen = backend.get_alias(name, alias)
    if seen != version:
        raise AssayError(
            f"MLflow did not keep {alias_subject(name, alias)} -> {version} (reads back {seen}); "
            "nothing recorded: re-run to finish the move"
        )
    return True


def move_alias(
    registry: Registry,
    name: str,
    alias: str,
    version: str,
    *,
    via: str,
    reason: str | None = None,
    incident_id: str | None = None,
    forced: bool = False,
    details: dict[str, Any] | None = None,
) -> AliasMoveResult:
    """Point ``name@alias`` at ``version`` exactly once, recording the move (see module doc).

    Steps: (1) settle intents an interrupted call left (complete the one MLflow already shows,
    abandon the others); (2) commit an ``alias.intent`` audit event; (3) under the store's write
    lock re-read the alias, set it once, read it back, and record the ``AliasMove`` row and the
    ``alias.move`` event. If the alias already points at ``version`` nothing is set again; if
    assay never recorded that (someone used plain MLflow), the position is adopted and recorded.
    Refused for a frozen model unless ``via`` is ``rollback``.
    """
    version = str(version)
    subject = alias_subject(name, alias)
    backend = registry.backend
    exempt = via in FREEZE_EXEMPT
    result = AliasMoveResult(
        name, alias, None, version, via, forced=forced, reason=reason, incident_id=incident_id
    )
    with registry.store.session(readonly=True) as session:
        require_artifact(session, "model", name, version)
        row = None if exempt else frozen_row(session, name)
        if row is not None:
            raise RefusedError(_frozen_message(name, row))
        pending = _open_intents(session, subject)

    current = backend.get_alias(name, alias)
    result.from_version = current

    # (1) an interrupted call: finish what MLflow shows happened, abandon the rest.
    if pending:
        with registry.store.session() as session:
            lock_store(session)
            current = backend.get_alias(name, alias)
            for intent in _open_intents(session, subject):
                if intent["to"] == current:
                    _record_move(registry, session, intent, moved=False, resumed=True)
                    if intent["to"] == version:
                        result.from_version = intent["from"]
                        result.recorded = result.resumed = True
                        result.note = "completed a move an interrupted call had started"
                else:
                    registry.record(
                        session,
                        ALIAS_ABANDONED,
                        subject,
                        {"id": intent["id"], "found": current},
                    )
        if result.resumed:
            return result

    if current == version:
        with registry.store.session() as session:
            lock_store(session)
            last = last_move(session, name, alias)
            if last is not None and last.to_version == version:
                result.from_version = last.from_version
                result.note = f"{subject} already points at version {version}"
                return result
            # Set outside assay (or before assay recorded moves): adopt it, now that it passed
            # the caller's checks, so that `assay status` stops reporting drift.
            intent = {
                "id": uuid.uuid4().hex[:16],
                "model": name,
                "alias": alias,
                "from": last.to_version if last is not None else None,
                "to": version,
                "via": via,
                "reason": reason,
                "incident_id": incident_id,
                "forced": forced,
                "adopted": True,
                **(details or {}),
            }
            registry.record(session, ALIAS_ADOPT, subject, {"id": intent["id"], "found": current})
            _record_move(registry, session, intent, moved=False)
        result.from_version = intent["from"]
        result.recorded = True
        result.note = f"{subject} already pointed at {version} (set outside assay): recorded it"
        return result

    # (2) intent, committed before MLflow is touched.
    intent = {
        "id": uuid.uuid4().hex[:16],
        "model": name,
        "alias": alias,
        "from": current,
        "to": version,
        "via": via,
        "reason": reason,
        "incident_id": incident_id,
        "forced": forced,
        **(details or {}),
    }
    with registry.store.session() as session:
        registry.record(session, ALIAS_INTENT, subject, intent)

    # (3) set once under the store's write lock, read back, record.
    try:
        with registry.store.session() as session:
            lock_store(session)
            row = None if exempt else frozen_row(session, name)
            if row is not None:
                raise RefusedError(_frozen_message(name, row))
            result.moved = set_alias_once(registry, name, alias, expected=current, version=version)
            _record_move(registry, session, intent, moved=result.moved)
            result.recorded = True
    except (MovedMeanwhile, RefusedError) as exc:
        found = exc.version if isinstance(exc, MovedMeanwhile) else current
        with registry.store.session() as session:
            registry.record(session, ALIAS_ABANDONED, subject, {"id": intent["id"], "found": found})
        if isinstance(exc, RefusedError):
            raise
        raise exc.refusal(subject) from None
    return result


# --- promote ---------------------------------------------------------------------------------


def promote(
    registry: Registry,
    name: str,
    version: str,
    *,
    alias: str = "production",
    force: bool = False,
    reason: str | None = None,
    incident_id: str | None = None,
) -> AliasMoveResult:
    """Point ``name@alias`` at ``version`` if it is known-good, its lineage is clean (a dataset
    may have been quarantined since it was marked) and it verifies now.

    ``force`` (which needs a ``reason``) overrides these checks; the verification still runs and
    its outcome, with every check overridden, is recorded with the move. Nothing overrides a freeze (RefusedError), and a
    registration that never completed cannot serve.
    """
    version = str(version)
    subject = display("model", name, version)
    if force and not (reason and reason.strip()):
        raise AssayError("--force needs --reason: a forced promotion is recorded with its reason")
    with registry.store.session(readonly=True) as session:
        artifact = require_artifact(session, "model", name, version)
        record = record_of(session, artifact)
        row = frozen_row(session, name)
        taint = tainted_lineage(session, artifact.id)
    if row is not None:
        raise RefusedError(_frozen_message(name, row))
    if record.status != "complete":
        raise RefusedError(
            f"{subject} is a registration that never completed ({record.status}): it cannot serve"
        )
    if record.state != "known-good" and not force:
        why = f" ({record.reason})" if record.reason else ""
        raise RefusedError(
            f"refusing to promote {subject} to {alias}: it is {record.state}{why}, not known-good "
            f"(`assay mark {name} {version} known-good --reason ...`, or --force --reason)"
        )
    if taint and not force:
        raise RefusedError(
            f"refusing to promote {subject} to {alias}: its lineage is tainted "
            f"({'; '.join(taint)}) (--force --reason to override)"
        )
    try:
        ok, summary = _verify(registry, "model", name, version)
    except AssayError as exc:
        if not force:
            raise IntegrityError(
                f"refusing to promote {subject} to {alias}: it cannot be verified now: {exc}"
            ) from exc
        ok, summary = False, _one_line(str(exc))
    if not ok and not force:
        raise IntegrityError(f"refusing to promote {subject} to {alias}: {summary}")
    overridden = []
    if force:
        if record.state != "known-good":
            overridden.append(f"state {record.state}")
        if taint:
            overridden.append(f"tainted lineage: {'; '.join(taint)}")
        if not ok:
            overridden.append(f"verification failed: {summary}")
    result = move_alias(
        registry,
        name,
        alias,
        version,
        via="promote",
        reason=reason,
        incident_id=incident_id,
        forced=force,
        details={"state": record.state, "verified": ok, "overridden": overridden},
    )
    result.state, result.verified, result.verify_summary = record.state, ok, summary
    return result

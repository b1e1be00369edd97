"""The playbook engine: validate, then run steps in order, recording each result before the next.

Crash safety: a step is recorded ``running`` before its action starts and ``succeeded``/``failed``
with its outputs after; the next step starts only once that record is committed. ``resume_incident``
skips what succeeded (steps and ``foreach`` items) and runs again whatever was started but not finished:
actions are idempotent, so the end state is the same as an uninterrupted run.

When the incident stops (completed, failed or waiting for approval), every finished step whose
action has a ``finalize(ctx, outputs)`` method gets it called: ``report.write`` re-renders its files,
so the report on disk describes the incident as it ended, not "running".

Approval gates: with ``assume_yes`` the gate passes; else with an ``approve`` callback (a terminal
prompt) the person decides; else (no terminal, no ``--yes``) the incident stops cleanly in
``waiting-approval`` and ``resume_incident(..., assume_yes=True)`` goes on from that step.

Test-only crash hook: ``ASSAY_TEST_CRASH_AT=<step_id>:<before|during|after>`` ends the process with
``os._exit(137)`` (as kill -9 would, nothing flushed) at that boundary: ``before`` the step records
anything, ``during`` right after the action returned (first item of a foreach) but before its result
is recorded, ``after`` the step's result is recorded. It exists for crash/resume tests; never set it
in production.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from assay.core.atomic import atomic_write
from assay.core.errors import AssayError, NotFoundError, RefusedError
from assay.incident._records import (
    COMPLETED,
    FAILED,
    PLANNED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    SUCCEEDED_WITH_WARNINGS,
    WAITING_APPROVAL,
    Incident,
    StepRecord,
    new_incident_id,
    utcnow,
)
from assay.incident._templates import (
    MissingValueError,
    TemplateError,
    compile_condition,
    compile_template,
    render_value,
)
from assay.incident.actions import ActionContext, ActionRegistry
from assay.incident.playbook import Playbook, Step, load_playbook, resolve_inputs, validate

__all__ = [
    "CRASH_ENV",
    "FileRecorder",
    "IncidentRecorder",
    "IncidentResult",
    "MemoryRecorder",
    "PlannedStep",
    "plan_incident",
    "resume_incident",
    "run_incident",
]

log = logging.getLogger(__name__)

CRASH_ENV = "ASSAY_TEST_CRASH_AT"
Approver = Callable[[Step, str], bool]


# --------------------------------------------------------------------------- recorders


class IncidentRecorder(Protocol):
    """Where incidents and step results are kept. Every call must be durable when it returns."""

    def create_incident(
        self, playbook_id: str, playbook_digest: str, inputs: dict[str, Any]
    ) -> str:
        """A new incident in status ``planned``; returns its id."""

    def get_incident(self, incident_id: str) -> Incident:
        """Raises NotFoundError for an unknown id."""

    def set_status(self, incident_id: str, status: str, detail: str | None = None) -> None: ...

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
        """Insert or replace the record of (incident, step, item)."""

    def get_steps(self, incident_id: str) -> list[StepRecord]:
        """Records in the order they were first written."""


class MemoryRecorder:
    """An in-memory IncidentRecorder (tests, dry runs of the engine itself)."""

    def __init__(self) -> None:
        self.incidents: dict[str, Incident] = {}
        self.steps: dict[str, dict[tuple[str, int | None], StepRecord]] = {}
        self._lock = threading.Lock()

    def create_incident(
        self, playbook_id: str, playbook_digest: str, inputs: dict[str, Any]
    ) -> str:
        with self._lock:
            incident_id = new_incident_id()
            while incident_id in self.incidents:
                incident_id = new_incident_id()
            self.incidents[incident_id] = Incident(
                incident_id, playbook_id, playbook_digest, dict(inputs)
            )
            self.steps[incident_id] = {}
            return incident_id

    def get_incident(self, incident_id: str) -> Incident:
        try:
            return self.incidents[incident_id]
        except KeyError:
            raise NotFoundError(f"no incident '{incident_id}'") from None

    def set_status(self, incident_id: str, status: str, detail: str | None = None) -> None:
        with self._lock:
            inc = self.get_incident(incident_id)
            self.incidents[incident_id] = replace(
                inc, status=status, detail=detail, updated_at=utcnow()
            )

    def record_step(
        self,
        incident_id,
        step_id,
        item_index,
        status,
        *,
        outputs=None,
        error=None,
        started_at=None,
        finished_at=None,
    ) -> None:
        with self._lock:
            self.get_incident(incident_id)
            self.steps[incident_id][(step_id, item_index)] = StepRecord(
                incident_id, step_id, item_index, status, outputs, error, started_at, finished_at
            )

    def get_steps(self, incident_id: str) -> list[StepRecord]:
        self.get_incident(incident_id)
        return list(self.steps[incident_id].values())


class FileRecorder:
    """An IncidentRecorder in one JSON file, rewritten atomically (temp file, fsync, rename) on every
    change: a crash leaves either the old or the new state. For tests, demos and single-user use."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"incidents": {}, "steps": {}}
        return json.loads(self.path.read_text(encoding="utf-8"))

    def _save(self, data: dict[str, Any]) -> None:
        text = json.dumps(data, indent=1, sort_keys=True)
        atomic_write(self.path, text.encode("utf-8"), mode=0o600)

    def create_incident(
        self, playbook_id: str, playbook_digest: str, inputs: dict[str, Any]
    ) -> str:
        with self._lock:
            data = self._load()
            incident_id = new_incident_id()
            while incident_id in data["incidents"]:
                incident_id = new_incident_id()
            inc = Incident(incident_id, playbook_id, playbook_digest, dict(inputs))
            data["incidents"][incident_id] = inc.to_dict()
            data["steps"][incident_id] = []
            self._save(data)
            return incident_id

    def get_incident(self, incident_id: str) -> Incident:
        data = self._load()
        if incident_id not in data["incidents"]:
            raise NotFoundError(f"no incident '{incident_id}'")
        return Incident.from_dict(data["incidents"][incident_id])

    def set_status(self, incident_id: str, status: str, detail: str | None = None) -> None:
        with self._lock:
            data = self._load()
            if incident_id not in data["incidents"]:
                raise NotFoundError(f"no incident '{incident_id}'")
            data["incidents"][incident_id].update(status=status, detail=detail, updated_at=utcnow())
            self._save(data)

    def record_step(
        self,
        incident_id,
        step_id,
        item_index,
        status,
        *,
        outputs=None,
        error=None,
        started_at=None,
        finished_at=None,
    ) -> None:
        with self._lock:
            data = self._load()
            if incident_id not in data["incidents"]:
                raise NotFoundError(f"no incident '{incident_id}'")
            rec = StepRecord(
                incident_id, step_id, item_index, status, outputs, error, started_at, finished_at
            ).to_dict()
            rows = data["steps"][incident_id]
            for i, row in enumerate(rows):
                if row["step_id"] == step_id and row["item_index"] == item_index:
                    rows[i] = rec
                    break
            else:
                rows.append(rec)
            self._save(data)

    def get_steps(self, incident_id: str) -> list[StepRecord]:
        data = self._load()
        if incident_id not in data["incidents"]:
            raise NotFoundError(f"no incident '{incident_id}'")
        return [StepRecord.from_dict(r) for r in data["steps"][incident_id]]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PlannedStep:
    """One line of a dry-run plan."""

    step_id: str
    action: str
    description: str  # the action's describe() text, params rendered as far as known
    mutates: bool
    params: dict[str, Any]
    when: str | None = None  # the condition's text
    will_run: bool | None = True  # False: skipped; None: decided at run time
    items: list[str] | None = None  # foreach: one description per known item
    approval: str | None = None
    on_failure: str = "halt"


@dataclass
class IncidentResult:
    incident_id: str | None
    playbook_id: str
    status: str
    steps: list[StepRecord] = field(default_factory=list)
    plan: list[PlannedStep] = field(default_factory=list)
    detail: str | None = None
    waiting_step: str | None = None  # the step whose approval is awaited

    @property
    def ok(self) -> bool:
        return self.status in (COMPLETED, PLANNED)

    @property
    def failed_steps(self) -> list[StepRecord]:
        return [s for s in self.steps if s.item_index is None and s.status == FAILED]


# --------------------------------------------------------------------------- engine


def _crash_point(step_id: str, boundary: str) -> None:
    """Test-only: die like kill -9 at ``ASSAY_TEST_CRASH_AT=<step>:<boundary>``."""
    target = os.environ.get(CRASH_ENV)
    if target and target == f"{step_id}:{boundary}":
        os._exit(137)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _context(pb: Playbook, inputs: Mapping[str, Any], incident_id: str) -> dict[str, Any]:
    return {
        "inputs": dict(inputs),
        "steps": {},
        "incident": {"id": incident_id, "playbook": pb.id, "severity": pb.severity},
    }


def _render_items(step: Step, ctx: Mapping[str, Any], partial: bool = False) -> Any:
    if isinstance(step.foreach, str):
        items = compile_template(step.foreach).render(ctx, partial=partial)
    else:
        items = render_value(step.foreach, ctx, partial=partial)
    if partial and isinstance(items, str):
        return None  # not known before the run
    if not isinstance(items, (list, tuple)):
        raise TemplateError(f"foreach must give a list, got {type(items).__name__}")
    return list(items)


class _Run:
    def __init__(
        self,
        pb: Playbook,
        actions: ActionRegistry,
        recorder: IncidentRecorder,
        incident_id: str,
        inputs: Mapping[str, Any],
        approve: Approver | None,
        assume_yes: bool,
        services: Mapping[str, Any] | None,
        actor: str,
    ) -> None:
        self.pb, self.actions, self.recorder = pb, actions, recorder
        self.incident_id = incident_id
        self.approve, self.assume_yes = approve, assume_yes
        self.services, self.actor = dict(services or {}), actor
        self.ctx = _context(pb, inputs, incident_id)
        self.done = {(r.step_id, r.item_index): r for r in recorder.get_steps(incident_id)}

    def result(self, status: str, detail: str | None = None, waiting: str | None = None):
        self.recorder.set_status(self.incident_id, status, detail)
        problems = self.finalize()
        if problems:
            detail = "; ".join([detail or status, *problems])
            self.recorder.set_status(self.incident_id, status, detail)
        return IncidentResult(
            self.incident_id,
            self.pb.id,
            status,
            steps=self.recorder.get_steps(self.incident_id),
            detail=detail,
            waiting_step=waiting,
        )

    def finalize(self) -> list[str]:
        """Let finished steps whose outputs describe the incident (``report.write``) bring them up
        to date, now that it has stopped: their files then show the final status. Returns the
        problems, one line each (the incident's own result stands)."""
        problems: list[str] = []
        steps = {s.id: s for s in self.pb.steps}
        for rec in self.recorder.get_steps(self.incident_id):
            step = steps.get(rec.step_id)
            if step is None or not rec.done or not rec.outputs:
                continue
            if rec.item_index is None and step.foreach is not None:
                continue  # the items carry the outputs
            action = self.actions.get(step.action) if step.action in self.actions else None
            finish = getattr(action, "finalize", None)
            if finish is None:
                continue
            try:
                finish(self.action_context(step, rec.item_index, None), rec.outputs)
            except Exception as exc:  # noqa: BLE001 - a report must not change the outcome
                log.warning(
                    "incident %s: step %s not finalized: %s", self.incident_id, step.id, exc
                )
                problems.append(f"step '{step.id}' not brought up to date: {exc}")
        return problems

    def action_context(self, step: Step, index: int | None, item: Any) -> ActionContext:
        return ActionContext(
            incident_id=self.incident_id,
            playbook_id=self.pb.id,
            step_id=step.id,
            item_index=index,
            item=item,
            actor=self.actor,
            services=self.services,
            recorder=self.recorder,
            playbook=self.pb,
        )

    def record(self, step_id: str, item: int | None, status: str, **kw: Any) -> None:
        if "outputs" in kw and kw["outputs"] is not None:
            kw["outputs"] = _jsonable(kw["outputs"])
        self.recorder.record_step(self.incident_id, step_id, item, status, **kw)

    def remember(self, step_id: str, status: str, outputs: dict[str, Any] | None) -> None:
        self.ctx["steps"][step_id] = {"status": status, "outputs": outputs or {}}

    def run_action(self, step: Step, params: Any, index: int | None, item: Any):
        action = self.actions.get(step.action)
        actx = self.action_context(step, index, item)
        try:
            outputs = action.run(actx, params)
        except AssayError as exc:
            return FAILED, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken action must not lose the record
            log.exception("action %s failed in step %s", step.action, step.id)
            return FAILED, None, f"{type(exc).__name__}: {exc}"
        outputs = dict(outputs) if isinstance(outputs, Mapping) else {"value": outputs}
        if actx.warnings:
            outputs["warnings"] = list(actx.warnings)
            return SUCCEEDED_WITH_WARNINGS, outputs, None
        return SUCCEEDED, outputs, None

    def fail(self, step: Step, error: str, started: str | None = None) -> None:
        self.record(step.id, None, FAILED, error=error, started_at=started, finished_at=utcnow())
        self.remember(step.id, FAILED, None)

    def execute(self) -> IncidentResult:
        self.recorder.set_status(self.incident_id, RUNNING)
        failures: list[str] = []
        for step in self.pb.steps:
            prev = self.done.get((step.id, None))
            if prev is not None and prev.done:
                self.remember(step.id, prev.status, prev.outputs)
                continue
            status, error = self.run_step(step, prev)
            if status == WAITING_APPROVAL:
                question = error or ""
                return self.result(
                    WAITING_APPROVAL,
                    f"step '{step.id}' waits for approval: {question}",
                    waiting=step.id,
                )
            if status == FAILED:
                failures.append(step.id)
                if step.on_failure == "halt":
                    return self.result(FAILED, f"step '{step.id}' failed: {error}")
        detail = None
        if failures:
            detail = f"finished; failed (on_failure: continue): {', '.join(failures)}"
        return self.result(COMPLETED, detail)

    def run_step(self, step: Step, prev: StepRecord | None) -> tuple[str, str | None]:
        started = prev.started_at if prev is not None and prev.status == RUNNING else None
        try:
            run_it = compile_condition(step.when)
            run_it = True if run_it is None else bool(run_it.evaluate(self.ctx))
        except TemplateError as exc:
            self.fail(step, f"when: {exc}")
            return FAILED, str(exc)
        if not run_it:
            now = utcnow()
            self.record(
                step.id,
                None,
                SKIPPED,
                started_at=now,
                finished_at=now,
                outputs={"reason": f"when: {step.when}"},
            )
            self.remember(step.id, SKIPPED, None)
            return SKIPPED, None

        approved_by = None
        if prev is not None and prev.status == RUNNING:
            approved_by = (prev.outputs or {}).get("approved_by")
        if step.approval and not approved_by:
            question = str(compile_template(step.approval).render(self.ctx, partial=True))
            if self.assume_yes:
                approved_by = "--yes"
            elif self.approve is not None and self.approve(step, question):
                approved_by = "prompt"
            else:
                why = "declined" if self.approve is not None else "no terminal and no --yes"
                self.record(
                    step.id, None, WAITING_APPROVAL, outputs={"question": question, "why": why}
                )
                return WAITING_APPROVAL, question

        try:
            params = render_value(step.params, self.ctx) if step.foreach is None else None
            items = _render_items(step, self.ctx) if step.foreach is not None else None
        except TemplateError as exc:
            self.fail(step, str(exc))
            return FAILED, str(exc)

        _crash_point(step.id, "before")
        started = started or utcnow()
        running_outputs = {"approved_by": approved_by} if approved_by else None
        self.record(step.id, None, RUNNING, outputs=running_outputs, started_at=started)
        log.info("incident %s: step %s (%s)", self.incident_id, step.id, step.action)

        if items is None:
            status, outputs, error = self.run_action(step, params, None, None)
            _crash_point(step.id, "during")
        else:
            status, outputs, error = self.run_items(step, items)
        if approved_by and outputs is not None:
            outputs.setdefault("approved_by", approved_by)
        self.record(
            step.id,
            None,
            status,
            outputs=outputs,
            error=error,
            started_at=started,
            finished_at=utcnow(),
        )
        _crash_point(step.id, "after")
        self.remember(step.id, status, outputs)
        return status, error

    def run_items(self, step: Step, items: list[Any]):
        results: list[dict[str, Any] | None] = []
        errors: list[str] = []
        warned = False
        crashed_once = False
        for index, item in enumerate(items):
            prev = self.done.get((step.id, index))
            if prev is not None and prev.done:
                results.append(prev.outputs)
                warned = warned or prev.status == SUCCEEDED_WITH_WARNINGS
                continue
            started = prev.started_at if prev is not None and prev.started_at else utcnow()
            self.record(step.id, index, RUNNING, started_at=started)
            item_ctx = {**self.ctx, "item": item}
            try:
                params = render_value(step.params, item_ctx)
            except TemplateError as exc:
                status, outputs, error = FAILED, None, str(exc)
            else:
                status, outputs, error = self.run_action(step, params, index, item)
                if not crashed_once:
                    crashed_once = True
                    _crash_point(step.id, "during")
            self.record(
                step.id,
                index,
                status,
                outputs=outputs,
                error=error,
                started_at=started,
                finished_at=utcnow(),
            )
            results.append(outputs)
            if status == FAILED:
                errors.append(f"item {index}: {error}")
                if step.on_failure == "halt":
                    break
            warned = warned or status == SUCCEEDED_WITH_WARNINGS
        ok = sum(1 for r in results if r is not None)
        outputs = {
            "items": results,
            "count": len(items),
            "summary": f"{ok}/{len(items)} item(s) succeeded",
        }
        if errors:
            return FAILED, outputs, "; ".join(errors)
        return (SUCCEEDED_WITH_WARNINGS if warned else SUCCEEDED), outputs, None


def _prepare(playbook: Playbook | str | os.PathLike[str], actions: ActionRegistry) -> Playbook:
    if isinstance(playbook, Playbook):
        validate(playbook, actions)
        return playbook
    return load_playbook(playbook, actions)


def plan_incident(
    playbook: Playbook | str | os.PathLike[str],
    inputs: Mapping[str, Any] | None,
    actions: ActionRegistry,
) -> IncidentResult:
    """The dry run: validate, check inputs, render what can be known; runs and records nothing."""
    pb = _prepare(playbook, actions)
    resolved = resolve_inputs(pb, inputs)
    ctx = _context(pb, resolved, "(dry-run)")
    plan: list[PlannedStep] = []
    for step in pb.steps:
        action = actions.get(step.action)
        will_run: bool | None = True
        if step.when is not None:
            try:
                expr = compile_condition(step.when)
                will_run = bool(expr.evaluate(ctx)) if expr else True
            except MissingValueError:
                will_run = None
            except TemplateError as exc:
                raise TemplateError(f"step '{step.id}': when: {exc}") from exc
        params = render_value(step.params, ctx, partial=True)
        items_text: list[str] | None = None
        if step.foreach is not None:
            items = _render_items(step, ctx, partial=True)
            if items is not None:
                items_text = [
                    action.describe(render_value(step.params, {**ctx, "item": it}, partial=True))
                    for it in items
                ]
        approval = (
            str(compile_template(step.approval).render(ctx, partial=True))
            if step.approval
            else None
        )
        text = action.describe(params)
        if step.foreach is not None:
            src = step.foreach if isinstance(step.foreach, str) else "the listed items"
            text = f"for each item of {src}: {text}"
        plan.append(
            PlannedStep(
                step_id=step.id,
                action=step.action,
                description=text,
                mutates=bool(action.mutates),
                params=params,
                when=None if step.when is None else str(step.when),
                will_run=will_run,
                items=items_text,
                approval=approval,
                on_failure=step.on_failure,
            )
        )
    return IncidentResult(None, pb.id, PLANNED, plan=plan)


def run_incident(
    playbook: Playbook | str | os.PathLike[str],
    inputs: Mapping[str, Any] | None,
    actions: ActionRegistry,
    recorder: IncidentRecorder,
    *,
    dry_run: bool = False,
    approve: Approver | None = None,
    assume_yes: bool = False,
    services: Mapping[str, Any] | None = None,
    actor: str = "unknown",
) -> IncidentResult:
    """Validate the playbook and inputs, then run it as a new incident (or only plan it)."""
    if dry_run:
        return plan_incident(playbook, inputs, actions)
    pb = _prepare(playbook, actions)
    resolved = resolve_inputs(pb, inputs)
    incident_id = recorder.create_incident(pb.id, pb.digest, _jsonable(resolved))
    log.info("incident %s: playbook %s started", incident_id, pb.id)
    run = _Run(pb, actions, recorder, incident_id, resolved, approve, assume_yes, services, actor)
    return run.execute()


def resume_incident(
    incident_id: str,
    actions: ActionRegistry,
    recorder: IncidentRecorder,
    *,
    playbook: Playbook | str | os.PathLike[str] | None = None,
    approve: Approver | None = None,
    assume_yes: bool = False,
    services: Mapping[str, Any] | None = None,
    actor: str = "unknown",
) -> IncidentResult:
    """Go on with an interrupted, failed or waiting incident from its first unfinished step.

    ``playbook`` defaults to the built-in with the incident's playbook id; it must be byte-identical to
    the one the incident started with (same digest), so a resumed incident never mixes two procedures.
    """
    inc = recorder.get_incident(incident_id)
    pb = _prepare(playbook if playbook is not None else inc.playbook_id, actions)
    if pb.id != inc.playbook_id:
        raise RefusedError(
            f"incident {incident_id} ran playbook '{inc.playbook_id}', not '{pb.id}'"
        )
    if pb.digest != inc.playbook_digest:
        raise RefusedError(
            f"playbook '{pb.id}' changed since incident {incident_id} started "
            f"({inc.playbook_digest[:19]} -> {pb.digest[:19]}): resume with the original file"
        )
    if inc.status == COMPLETED:
        # Nothing to run; a crash right after completing may have left a report behind its status.
        run = _Run(pb, actions, recorder, incident_id, inc.inputs, None, False, services, actor)
        run.finalize()
        return IncidentResult(
            incident_id, pb.id, COMPLETED, steps=recorder.get_steps(incident_id), detail=inc.detail
        )
    log.info("incident %s: resuming (was %s)", incident_id, inc.status)
    run = _Run(pb, actions, recorder, incident_id, inc.inputs, approve, assume_yes, services, actor)
    return run.execute()

"""The engine: validate first, record every step before the next, resume, approvals, dry runs,
and crash/resume in a subprocess killed with the test-only ASSAY_TEST_CRASH_AT hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from assay.core.errors import RefusedError
from assay.incident.actions import SpecAction
from assay.incident.engine import FileRecorder, MemoryRecorder, resume_incident, run_incident
from assay.incident.playbook import InputError, PlaybookError, parse_playbook
from assay.testing.fakes import FakeRegistry, fake_actions

PLAYBOOK = """\
id: demo
severity: high
threats: [AML.T0020]
inputs:
  dataset: {type: dataset}
  notify_file: {type: path, required: false}
steps:
  - id: quarantine
    action: dataset.quarantine
    with: {dataset: "{{ inputs.dataset }}", reason: test}
  - id: radius
    action: lineage.blast_radius
    with: {source: "dataset:{{ inputs.dataset }}"}
  - id: freeze
    action: registry.freeze
    when: steps.radius.outputs.models | length > 0
    with: {models: "{{ steps.radius.outputs.models }}"}
  - id: rollback
    action: registry.rollback
    foreach: "{{ steps.radius.outputs.aliases }}"
    with: {model: "{{ item.model }}", alias: "{{ item.alias }}",
           avoid: "{{ steps.radius.outputs.versions }}"}
  - id: mark
    action: registry.mark
    with: {versions: "{{ steps.radius.outputs.versions }}", state: compromised}
  - id: notify
    action: notify
    when: inputs.notify_file
    with: {message: "done", file: "{{ inputs.notify_file }}"}
"""


def make_registry() -> FakeRegistry:
    reg = FakeRegistry()
    reg.add("churn", 1, datasets=["customers@2"])
    reg.add("churn", 2, datasets=["customers@3"])
    reg.add("churn", 3, datasets=["customers@2"], parent="churn/2")
    reg.add("fraud", 1, datasets=["tx@1"])
    reg.add("fraud", 2, datasets=["customers@3"])
    reg.aliases.update(
        {("churn", "production"): 3, ("churn", "staging"): 3, ("fraud", "production"): 2}
    )
    return reg


@pytest.fixture
def pb():
    return parse_playbook(PLAYBOOK, "demo.yaml")


def statuses(result):
    return {(s.step_id, s.item_index): s.status for s in result.steps}


def test_runs_to_completion(pb):
    reg, rec = make_registry(), MemoryRecorder()
    result = run_incident(pb, {"dataset": "customers@3"}, fake_actions(reg), rec)
    assert result.status == "completed" and result.ok
    assert reg.aliases == {
        ("churn", "production"): 1,
        ("churn", "staging"): 1,
        ("fraud", "production"): 1,
    }
    assert reg.datasets["customers@3"] == "quarantined"
    assert {v.state for m in reg.models.values() for n, v in m.items()} == {
        "known-good",
        "compromised",
    }
    st = statuses(result)
    assert st[("rollback", None)] == "succeeded" and st[("rollback", 2)] == "succeeded"
    assert st[("notify", None)] == "skipped"
    assert rec.get_incident(result.incident_id).status == "completed"
    rb = next(s for s in result.steps if s.step_id == "rollback" and s.item_index is None)
    assert rb.outputs["count"] == 3 and len(rb.outputs["items"]) == 3


def test_each_step_is_recorded_before_the_next_starts(pb):
    reg, rec = make_registry(), MemoryRecorder()
    actions = fake_actions(reg)
    seen = []

    class Probe(SpecAction):
        spec = actions.get("registry.mark").spec

        def run(self, ctx, params):
            seen.extend((s.step_id, s.item_index, s.status) for s in rec.get_steps(ctx.incident_id))
            return {"summary": "probe"}

    actions.register(Probe(), replace=True)
    run_incident(pb, {"dataset": "customers@3"}, actions, rec)
    assert ("rollback", None, "succeeded") in seen and ("mark", None, "running") in seen
    assert all(status != "running" for step, _, status in seen if step != "mark")


def test_refuses_before_anything_runs(pb):
    reg, rec = make_registry(), MemoryRecorder()
    with pytest.raises(InputError, match="needs input"):
        run_incident(pb, {}, fake_actions(reg), rec)
    bad = parse_playbook(PLAYBOOK.replace("registry.mark", "registry.mrak"), "demo.yaml")
    with pytest.raises(PlaybookError, match="demo.yaml:24: step 'mark': unknown action"):
        run_incident(bad, {"dataset": "customers@3"}, fake_actions(reg), rec)
    assert rec.incidents == {} and reg.events == []


def test_dry_run_plans_and_records_nothing(pb):
    reg, rec = make_registry(), MemoryRecorder()
    result = run_incident(pb, {"dataset": "customers@3"}, fake_actions(reg), rec, dry_run=True)
    assert result.status == "planned" and result.incident_id is None
    assert rec.incidents == {} and reg.events == []
    plan = {p.step_id: p for p in result.plan}
    assert [p.step_id for p in result.plan] == [
        "quarantine",
        "radius",
        "freeze",
        "rollback",
        "mark",
        "notify",
    ]
    assert plan["quarantine"].description == "quarantine dataset customers@3"
    assert plan["quarantine"].mutates and not plan["radius"].mutates
    assert plan["freeze"].will_run is None  # depends on the blast radius
    assert plan["notify"].will_run is False
    assert "{{ steps.radius.outputs.aliases }}" in plan["rollback"].description


def test_on_failure_halt_then_resume(pb):
    reg, rec = make_registry(), MemoryRecorder()
    del reg.aliases[("churn", "staging")]
    reg.models["churn"][1].state = "quarantined"  # no rollback target for churn
    actions = fake_actions(reg)
    result = run_incident(pb, {"dataset": "customers@3"}, actions, rec)
    assert result.status == "failed" and "step 'rollback' failed" in result.detail
    assert "no known-good version of churn" in result.detail
    assert ("mark", None) not in statuses(result)
    reg.models["churn"][1].state = "known-good"  # someone restores a good version
    calls_before = len(actions.get("dataset.quarantine").calls)
    again = resume_incident(result.incident_id, actions, rec, playbook=pb)
    assert again.status == "completed"
    assert len(actions.get("dataset.quarantine").calls) == calls_before  # not re-run
    assert reg.aliases[("churn", "production")] == 1


def test_on_failure_continue_goes_on(pb):
    text = PLAYBOOK.replace(
        "    action: registry.freeze\n", "    action: registry.freeze\n    on_failure: continue\n"
    )
    pb2 = parse_playbook(text, "demo.yaml")
    reg, rec = make_registry(), MemoryRecorder()
    actions = fake_actions(reg)

    class Broken(SpecAction):
        spec = actions.get("registry.freeze").spec

        def run(self, ctx, params):
            raise RuntimeError("store unavailable")

    actions.register(Broken(), replace=True)
    result = run_incident(pb2, {"dataset": "customers@3"}, actions, rec)
    assert result.status == "completed" and "freeze" in result.detail
    freeze = next(s for s in result.steps if s.step_id == "freeze")
    assert freeze.status == "failed" and freeze.error == "RuntimeError: store unavailable"
    assert statuses(result)[("mark", None)] == "succeeded"
    assert [s.step_id for s in result.failed_steps] == ["freeze"]


def test_resume_skips_succeeded_foreach_items(pb):
    reg, rec = make_registry(), MemoryRecorder()
    actions = fake_actions(reg)
    rollback = actions.get("registry.rollback")
    original = rollback._fn
    state = {"n": 0}

    def flaky(r, ctx, p):
        state["n"] += 1
        if state["n"] == 2:
            raise RuntimeError("network blip")
        return original(r, ctx, p)

    rollback._fn = flaky
    first = run_incident(pb, {"dataset": "customers@3"}, actions, rec)
    assert first.status == "failed"
    assert statuses(first)[("rollback", 0)] == "succeeded"
    assert statuses(first)[("rollback", 1)] == "failed"
    assert ("rollback", 2) not in statuses(first)
    again = resume_incident(first.incident_id, actions, rec, playbook=pb)
    assert again.status == "completed"
    assert [c["model"] for c in rollback.calls] == ["churn", "churn", "churn", "fraud"]


def test_warnings_are_recorded(pb, tmp_path: Path):
    reg, rec = make_registry(), MemoryRecorder()
    blocker = tmp_path / "f"
    blocker.write_text("")
    result = run_incident(
        pb, {"dataset": "customers@3", "notify_file": str(blocker / "x")}, fake_actions(reg), rec
    )
    assert result.status == "completed"
    assert statuses(result)[("notify", None)] == "succeeded-with-warnings"


APPROVAL = PLAYBOOK.replace(
    "  - id: rollback\n", '  - id: rollback\n    approval: "Roll back {{ inputs.dataset }}?"\n'
)


def test_approval_gate_paths():
    pb = parse_playbook(APPROVAL, "demo.yaml")
    asked = []

    def yes(step, question):
        asked.append((step.id, question))
        return True

    reg, rec = make_registry(), MemoryRecorder()
    result = run_incident(pb, {"dataset": "customers@3"}, fake_actions(reg), rec, approve=yes)
    assert result.status == "completed" and asked == [("rollback", "Roll back customers@3?")]
    rb = next(s for s in result.steps if s.step_id == "rollback" and s.item_index is None)
    assert rb.outputs["approved_by"] == "prompt"

    reg, rec = make_registry(), MemoryRecorder()
    result = run_incident(pb, {"dataset": "customers@3"}, fake_actions(reg), rec, assume_yes=True)
    assert result.status == "completed"

    # no terminal and no --yes: stop cleanly before the gate, resume later with --yes
    reg, rec = make_registry(), MemoryRecorder()
    actions = fake_actions(reg)
    result = run_incident(pb, {"dataset": "customers@3"}, actions, rec)
    assert result.status == "waiting-approval" and result.waiting_step == "rollback"
    assert rec.get_incident(result.incident_id).status == "waiting-approval"
    assert reg.aliases[("churn", "production")] == 3
    assert statuses(result)[("freeze", None)] == "succeeded"
    again = resume_incident(result.incident_id, actions, rec, playbook=pb)
    assert again.status == "waiting-approval"
    declined = resume_incident(
        result.incident_id, actions, rec, playbook=pb, approve=lambda s, q: False
    )
    assert declined.status == "waiting-approval"
    gate = next(s for s in declined.steps if s.step_id == "rollback")
    assert gate.status == "waiting-approval" and gate.outputs["why"] == "declined"
    done = resume_incident(result.incident_id, actions, rec, playbook=pb, assume_yes=True)
    assert done.status == "completed" and reg.aliases[("churn", "production")] == 1
    assert len(actions.get("dataset.quarantine").calls) == 1


def test_resume_refuses_a_changed_playbook(pb):
    reg, rec = make_registry(), MemoryRecorder()
    pb_gate = parse_playbook(APPROVAL, "demo.yaml")
    result = run_incident(pb_gate, {"dataset": "customers@3"}, fake_actions(reg), rec)
    with pytest.raises(RefusedError, match="changed since incident"):
        resume_incident(result.incident_id, fake_actions(reg), rec, playbook=pb)


def test_resume_of_completed_incident_is_a_no_op(pb):
    reg, rec = make_registry(), MemoryRecorder()
    actions = fake_actions(reg)
    result = run_incident(pb, {"dataset": "customers@3"}, actions, rec)
    events = list(reg.events)
    again = resume_incident(result.incident_id, actions, rec, playbook=pb)
    assert again.status == "completed" and reg.events == events


def test_file_recorder_round_trip(tmp_path: Path, pb):
    rec = FileRecorder(tmp_path / "incidents.json")
    result = run_incident(pb, {"dataset": "customers@3"}, fake_actions(make_registry()), rec)
    reopened = FileRecorder(tmp_path / "incidents.json")
    assert reopened.get_incident(result.incident_id).status == "completed"
    assert [s.step_id for s in reopened.get_steps(result.incident_id)] == [
        s.step_id for s in result.steps
    ]


# --------------------------------------------------------------------------- crash and resume

SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, os, sys
    from pathlib import Path
    from assay.testing.fakes import FakeRegistry, FakeVersion, fake_actions
    from assay.incident.engine import FileRecorder, run_incident, resume_incident
    from assay.incident.playbook import parse_playbook

    work = Path(sys.argv[2])
    state = work / "registry.json"

    def load():
        reg = FakeRegistry()
        if not state.exists():
            reg.add("churn", 1, datasets=["customers@2"])
            reg.add("churn", 2, datasets=["customers@3"])
            reg.add("churn", 3, datasets=["customers@2"], parent="churn/2")
            reg.add("fraud", 1, datasets=["tx@1"])
            reg.add("fraud", 2, datasets=["customers@3"])
            reg.aliases.update({("churn", "production"): 3, ("churn", "staging"): 3,
                                ("fraud", "production"): 2})
            return reg
        d = json.loads(state.read_text())
        for name, versions in d["models"].items():
            for v in versions:
                v["tags"] = set(v["tags"])
                reg.models.setdefault(name, {})[v["version"]] = FakeVersion(**v)
        reg.aliases = {tuple(k.split("|")): v for k, v in d["aliases"].items()}
        reg.frozen, reg.datasets = set(d["frozen"]), d["datasets"]
        reg.events = [tuple(e) for e in d["events"]]
        return reg

    def save(reg):  # the 'store': durable as soon as an action returns
        d = {"models": {n: [dict(dataclasses.asdict(v), tags=sorted(v.tags))
                            for v in vs.values()] for n, vs in reg.models.items()},
             "aliases": {"|".join(k): v for k, v in reg.aliases.items()},
             "frozen": sorted(reg.frozen), "datasets": reg.datasets, "events": reg.events}
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps(d, sort_keys=True))
        os.replace(tmp, state)

    reg = load()
    actions = fake_actions(reg)
    for action in actions:
        if hasattr(action, "_fn"):
            def wrapped(r, ctx, p, _fn=action._fn):
                out = _fn(r, ctx, p)
                save(r)
                return out
            action._fn = wrapped
    pb = parse_playbook((work / "pb.yaml").read_text(), "pb.yaml")
    rec = FileRecorder(work / "incidents.json")
    if sys.argv[1] == "run":
        save(reg)
        r = run_incident(pb, {"dataset": "customers@3"}, actions, rec)
    else:
        incident_id = next(iter(json.loads((work / "incidents.json").read_text())["incidents"]))
        r = resume_incident(incident_id, actions, rec, playbook=pb)
    print(r.status)
    """
)


def _run(mode: str, work: Path, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ASSAY_TEST_CRASH_AT"}
    if crash:
        env["ASSAY_TEST_CRASH_AT"] = crash
    return subprocess.run(
        [sys.executable, str(work / "script.py"), mode, str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _end_state(work: Path) -> tuple[dict, dict]:
    incidents = json.loads((work / "incidents.json").read_text())
    (incident,) = incidents["incidents"].values()
    text = (work / "registry.json").read_text().replace(incident["id"], "<incident>")
    registry = json.loads(text)
    steps = {
        (s["step_id"], s["item_index"]): s["status"] for s in incidents["steps"][incident["id"]]
    }
    return registry, {"status": incident["status"], "steps": steps}


def _prepare(work: Path) -> None:
    work.mkdir()
    (work / "script.py").write_text(SCRIPT)
    (work / "pb.yaml").write_text(PLAYBOOK)


@pytest.mark.slow
@pytest.mark.parametrize(
    "crash",
    [
        "quarantine:before",
        "quarantine:during",
        "radius:after",
        "rollback:during",
        "rollback:after",
        "mark:before",
        "mark:during",
    ],
)
def test_crash_then_resume_reaches_the_same_end_state(tmp_path: Path, crash: str):
    clean = tmp_path / "clean"
    _prepare(clean)
    done = _run("run", clean)
    assert done.returncode == 0 and done.stdout.strip() == "completed", done.stderr

    work = tmp_path / "crashed"
    _prepare(work)
    died = _run("run", work, crash)
    assert died.returncode == 137, died.stderr
    step = crash.split(":")[0]
    _, mid = _end_state(work)
    assert mid["status"] == "running"
    if crash.endswith(":during"):
        assert mid["steps"].get((step, None)) == "running"  # started, result not recorded
    resumed = _run("resume", work)
    assert resumed.returncode == 0 and resumed.stdout.strip() == "completed", resumed.stderr
    assert _end_state(work) == _end_state(clean)

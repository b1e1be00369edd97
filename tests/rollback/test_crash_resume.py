"""Kill -9 at every step boundary of the data-poisoning playbook and inside the rollback step, then
`assay incident resume ID --yes`: the registry and the audit log mean the same as after an
uninterrupted run, the alias moved exactly once, and `assay audit verify` passes.

The crash is the test-only hook ``ASSAY_TEST_CRASH_AT``: ``<step>:before|during|after`` in the
engine (before the step records anything / after its action returned but before its result is
recorded / after it is recorded) and ``rollback:after-intent`` / ``rollback:after-set-alias`` in
``rollback/execute.py`` (intent committed, alias untouched / MLflow's alias set, nothing of the move
committed). Each hook ends the process with ``os._exit(137)``: no cleanup, no flush, as kill -9.

Every crash point runs (7 steps x 3 boundaries + 2 inside the rollback = 23), each on its own copy
of one prepared home, as real `assay` subprocesses (a crash kills the process). They run a few at
a time (one module-scoped fixture) so that the ~3 s MLflow import of each process overlaps.

"The same end state" (see rb_fixtures): ``registry_state`` (aliases and ``assay.state`` tags read
from MLflow, every version's state, lineage, freezes, keys, the recorded alias moves) is equal, and
``semantic_audit`` (multiset of (action, subject, payload) with incident/rollback ids and times
normalised) is equal. Incident bookkeeping events (incident.open/status/step) are left out of that
multiset because a resumed incident legitimately records its own history; instead every step is
checked to have finished exactly as in the uninterrupted run.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rb_fixtures as rb  # noqa: E402
from click.testing import CliRunner

from assay.cli import cli

pytestmark = pytest.mark.slow

STEPS = ("quarantine", "radius", "freeze", "rollback", "mark", "notify", "report")
CRASH_POINTS = [f"{s}:{b}" for s in STEPS for b in ("before", "during", "after")] + [
    "rollback:after-intent",
    "rollback:after-set-alias",
]
WORKERS = max(2, min(4, (os.cpu_count() or 2)))
MODEL, OTHER, DATASET = "churn", "fraud", "customers"


def _incident_args(home: Path) -> list[str]:
    return [
        "incident",
        "run",
        "data-poisoning",
        "--set",
        f"dataset={DATASET}@2",
        "--set",
        "reason=label flipping in batch 7",
        "--set",
        f"notify_file={home / 'notify.jsonl'}",
        "--yes",
        "--json",
    ]


@dataclass
class Outcome:
    home: Path
    crash: Any  # CompletedProcess of the crashed run
    resume: Any  # CompletedProcess of `incident resume` (None for the baseline)
    incident_id: str | None


def _build_template(home: Path, root: Path) -> None:
    """customers@1, @2; churn 1, 2 (on @1), 3 (on @2, production); fraud 1 (on @1), 2 (fine-tuned
    from churn/3, production); all known-good except fraud/2."""
    reg = rb.init_home(home)
    rb.dataset(reg, DATASET, root)
    rb.dataset(reg, DATASET, root)
    rb.model(reg, MODEL, root, datasets=(f"{DATASET}@1",))
    rb.model(reg, MODEL, root, datasets=(f"{DATASET}@1",))
    rb.model(reg, MODEL, root, datasets=(f"{DATASET}@2",), alias="production")
    for v in "123":
        rb.mark(reg, MODEL, v, "known-good")
    rb.model(reg, OTHER, root, datasets=(f"{DATASET}@1",))
    rb.model(reg, OTHER, root, parents=(f"{MODEL}/3",), alias="production")
    rb.mark(reg, OTHER, "1", "known-good")


def _run_one(template: Path, base: Path, point: str | None) -> Outcome:
    home = rb.copy_home(template, base / (point or "baseline").replace(":", "-"), checkpoint=False)
    crash = rb.cli(home, *_incident_args(home), crash_at=point)
    if point is None:
        return Outcome(
            home, crash, None, rb.incident_id_of(crash) if crash.returncode == 0 else None
        )
    incidents = rb.open_registry(home)
    last = rb.last_incident(incidents)
    if last is None:  # crashed before the incident was created: nothing to resume
        return Outcome(home, crash, None, None)
    resume = rb.cli(home, "incident", "resume", last.id, "--yes", "--json")
    return Outcome(home, crash, resume, last.id)


@pytest.fixture(scope="module", params=rb.STORE_BACKENDS)
def template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The prepared home, once with a SQLite store and once on PostgreSQL (when available)."""
    base = tmp_path_factory.mktemp("crash")
    for home in rb.backend_home(request.param, base / "template"):
        with pytest.MonkeyPatch.context() as mp:
            rb.open_in(mp, home)
            _build_template(home, base / "src")
        rb.checkpoint_sqlite(home)
        yield home


@pytest.fixture(scope="module")
def runs(template: Path) -> dict[str, Outcome]:
    """Every crash point, a few at a time, each on its own copy of the template."""
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(lambda p: _run_one(template, template.parent, p), CRASH_POINTS))
    return dict(zip(CRASH_POINTS, outcomes, strict=True))


def _view(home: Path) -> dict[str, Any]:
    reg = rb.open_registry(home)
    return {
        "state": rb.registry_state(reg, [MODEL, OTHER]),
        "audit": rb.semantic_audit(reg),
        "reg": reg,
    }


@pytest.fixture(scope="module")
def baseline(template: Path) -> dict[str, Any]:
    out = _run_one(template, template.parent, None)
    assert out.crash.returncode == 0, out.crash.stderr
    view = _view(out.home)
    reg = view["reg"]
    assert reg.backend.get_alias(MODEL, "production") == "2"
    assert reg.backend.get_alias(OTHER, "production") == "1"
    view["steps"] = rb.step_records(reg, out.incident_id)
    return view


def test_the_uninterrupted_run(baseline):
    state = baseline["state"]
    assert state["states"][f"model:{MODEL}/3"] == "compromised"
    assert state["states"][f"model:{OTHER}/2"] == "compromised"
    assert state["states"][f"dataset:{DATASET}/2"] == "quarantined"
    assert state["frozen"] == [MODEL, OTHER]
    rollbacks = [m for m in state["alias_moves"] if m[4] == "rollback"]
    assert sorted(rollbacks) == [
        (MODEL, "production", "3", "2", "rollback"),
        (OTHER, "production", "2", "1", "rollback"),
    ]
    assert set(baseline["steps"].values()) == {"succeeded"}
    assert ("notify", None) in baseline["steps"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_then_resume_ends_like_an_uninterrupted_run(point, runs, baseline):
    out = runs[point]
    assert out.crash.returncode == 137, (point, out.crash.returncode, out.crash.stderr[-2000:])
    assert out.incident_id is not None  # every crash point is after the incident is created
    assert out.resume.returncode == 0, (out.resume.stdout, out.resume.stderr[-2000:])
    assert json.loads(out.resume.stdout)["status"] == "completed"

    view = _view(out.home)
    assert view["state"] == baseline["state"]
    assert view["audit"] == baseline["audit"]
    # Alias moved exactly once per model (also part of the state above; said plainly here).
    reg = view["reg"]
    for name in (MODEL, OTHER):
        assert [m for m in rb.alias_moves(reg, name) if m[2] == "rollback"] == [baseline_move(name)]
    assert sum(1 for k in view["audit"] if k[0] == "rollback.intent") == 2
    # Every step finished as in the uninterrupted run, each once (records are per step and item).
    assert rb.step_records(reg, out.incident_id) == baseline["steps"]
    # The notification went out once, the report exists.
    assert len((out.home / "notify.jsonl").read_text().splitlines()) == 1
    report = out.home / "incidents" / out.incident_id / f"incident-{out.incident_id}.json"
    assert json.loads(report.read_text())["incident"]["status"] == "completed"
    verified = CliRunner().invoke(cli, ["audit", "verify"], env=rb.env_for(out.home))
    assert verified.exit_code == 0, verified.output


def baseline_move(name: str) -> tuple[str, str, str]:
    return ("3", "2", "rollback") if name == MODEL else ("2", "1", "rollback")


# --- the rollback command itself, and two at once ---------------------------------------------


@pytest.mark.parametrize("point", ["rollback:after-intent", "rollback:after-set-alias"])
def test_assay_rollback_killed_then_rerun_moves_once(point, template, tmp_path):
    home = rb.copy_home(template, tmp_path / "home")
    crashed = rb.cli(home, "rollback", MODEL, "--yes", "--reason", "drill", crash_at=point)
    assert crashed.returncode == 137, crashed.stderr
    reg = rb.open_registry(home)
    expected_alias = "3" if point == "rollback:after-intent" else "2"
    assert reg.backend.get_alias(MODEL, "production") == expected_alias
    assert rb.alias_moves(reg, MODEL)[-1][2] != "rollback"  # nothing of the move committed

    again = rb.cli(home, "rollback", MODEL, "--yes", "--json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["resumed"] is True and data["to_version"] == "2"
    assert data["moved"] is (point == "rollback:after-intent")
    assert reg.backend.get_alias(MODEL, "production") == "2"
    assert [m for m in rb.alias_moves(reg, MODEL) if m[2] == "rollback"] == [("3", "2", "rollback")]
    assert rb.state_of(reg, MODEL, "3") == "quarantined"
    actions = [e.action for e in reg.audit.events(0) if e.action.startswith("rollback.")]
    assert actions == ["rollback.intent", "rollback.done"]

    third = rb.cli(home, "rollback", MODEL, "--yes")  # done: not repeated by accident
    assert third.returncode == 1 and "already rolled back" in third.stderr
    rb.audit_verify(home)


def test_two_rollbacks_at_once_move_the_alias_once(template, tmp_path):
    home = rb.copy_home(template, tmp_path / "home")
    procs = [rb.spawn(home, "rollback", MODEL, "--yes", "--json") for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    reg = rb.open_registry(home)
    assert reg.backend.get_alias(MODEL, "production") == "2"
    assert [m for m in rb.alias_moves(reg, MODEL) if m[2] == "rollback"] == [("3", "2", "rollback")]
    moved = [json.loads(out)["moved"] for code, out, _ in results if code == 0]
    assert moved.count(True) == 1, results
    for code, _, err in results:
        assert code == 0 or "already rolled back" in err, err
    rb.audit_verify(home)


def test_two_incidents_at_once_move_each_alias_once(template, baseline, tmp_path):
    home = rb.copy_home(template, tmp_path / "home")
    args = _incident_args(home)
    procs = [rb.spawn(home, *args) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, err[-2000:]
        assert json.loads(out)["status"] == "completed"
    reg = rb.open_registry(home)
    state = rb.registry_state(reg, [MODEL, OTHER])
    assert state == baseline["state"]
    for name in (MODEL, OTHER):
        assert [m for m in rb.alias_moves(reg, name) if m[2] == "rollback"] == [baseline_move(name)]
    rb.audit_verify(home)

"""`assay playbook ...` and `assay incident ...`: the commands' contracts (exit codes, JSON, files).
The playbooks end to end on a real registry are in tests/incident/test_incidents_real.py."""

from __future__ import annotations

import json

import pytest

from assay.incident.playbook import builtin_playbooks

pytestmark = pytest.mark.slow


def test_playbook_list_and_show(invoke):
    out = invoke("playbook", "list", "--json")
    assert out.exit_code == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["id"] for r in rows} == set(builtin_playbooks())
    assert all(r["threats"] for r in rows)
    shown = invoke("playbook", "show", "data-poisoning")
    assert shown.exit_code == 0 and shown.stdout.startswith("id: data-poisoning")


@pytest.mark.parametrize("name", sorted(builtin_playbooks()))
def test_playbook_validate_builtin(invoke, name):
    out = invoke("playbook", "validate", name)
    assert out.exit_code == 0, out.stderr
    assert "is valid" in out.stdout


def test_playbook_validate_names_file_line_and_step(invoke, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "id: bad\ndescription: x\nseverity: high\nthreats: [AML.T0020, ML02:2023]\nsteps:\n"
        "  - id: one\n    action: registry.frezee\n    with: {models: [a]}\n"
    )
    out = invoke("playbook", "validate", path)
    assert out.exit_code == 1
    assert f"{path}:7" in out.stderr and "'one'" in out.stderr and "unknown action" in out.stderr


def test_incident_dry_run_records_nothing(home, invoke, audit_events_count):
    size = audit_events_count(home)
    out = invoke(
        "incident",
        "run",
        "data-poisoning",
        "--set",
        "dataset=d@2",
        "--set",
        "reason=x",
        "--dry-run",
        "--json",
    )
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "planned" and data["incident_id"] is None
    assert [p["step_id"] for p in data["plan"]][:3] == ["quarantine", "radius", "freeze"]
    assert audit_events_count(home) == size
    assert json.loads(invoke("incident", "list", "--json").stdout) == []


def test_incident_bad_set_and_unknown_ids(home, invoke, expect_error):
    bad = invoke("incident", "run", "data-poisoning", "--set", "novalue")
    assert bad.exit_code == 2
    expect_error(invoke("incident", "show", "nope"), 1, "no incident")
    expect_error(invoke("incident", "resume", "nope", "--yes"), 1, "no incident")
    expect_error(invoke("incident", "run", "no-such-playbook"), 1, "no playbook")


def test_incident_that_fails_exits_1_and_can_be_resumed(home, invoke):
    # The dataset does not exist: the first step fails, the incident is recorded as failed.
    out = invoke(
        "incident",
        "run",
        "data-poisoning",
        "--set",
        "dataset=ghost@2",
        "--set",
        "reason=x",
        "--yes",
    )
    assert out.exit_code == 1
    assert "failed" in out.stderr
    listed = json.loads(invoke("incident", "list", "--json").stdout)
    assert [i["status"] for i in listed] == ["failed"]
    again = invoke("incident", "resume", listed[0]["id"], "--yes")
    assert again.exit_code == 1  # still no such dataset: fails the same way, nothing else ran

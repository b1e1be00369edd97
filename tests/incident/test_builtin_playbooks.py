"""Every shipped playbook validates against the action names and params, and runs end to end on
the in-memory fakes with the expected end state."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from assay.incident.actions import SPECS
from assay.incident.engine import MemoryRecorder, run_incident
from assay.incident.playbook import THREATS, builtin_playbooks, load_playbook, validate
from assay.testing.fakes import FakeRegistry, fake_actions

EXPECTED = {
    "adversarial-evasion",
    "backdoored-model",
    "data-poisoning",
    "model-extraction",
    "model-theft",
    "signing-key-compromise",
    "tampered-artifact",
}
REQUIRED_ACTIONS = {
    "lineage.blast_radius",
    "dataset.quarantine",
    "registry.freeze",
    "registry.verify",
    "registry.mark",
    "registry.rollback",
    "keys.revoke",
    "keys.resign",
    "watermark.trace",
    "serve.restrict",
    "notify",
    "report.write",
}


def test_the_action_names():
    assert set(SPECS) == REQUIRED_ACTIONS
    assert set(fake_actions().names()) == REQUIRED_ACTIONS


def test_all_builtins_are_shipped():
    assert set(builtin_playbooks()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_validates(name):
    pb = load_playbook(name)
    validate(pb, fake_actions())
    assert pb.id == name
    assert pb.description and pb.severity in ("high", "critical")
    assert pb.threats and all(t in THREATS for t in pb.threats), pb.threats
    assert any(t.startswith("AML.T") for t in pb.threats)
    assert any(t.startswith("ML") for t in pb.threats)
    assert pb.steps[-1].action == "report.write"
    for step in pb.steps:
        if step.action == "notify":
            assert step.on_failure == "continue"  # a notification never halts containment


def registry() -> FakeRegistry:
    reg = FakeRegistry()
    reg.add("churn", 1, datasets=["customers@2"], tags={"robust"})
    reg.add("churn", 2, datasets=["customers@2"])
    reg.add("churn", 3, datasets=["customers@3"])
    reg.add("churn", 4, datasets=["customers@3"], parent="churn/3")
    reg.add("fraud", 1, datasets=["tx@1"])
    reg.add("fraud", 2, datasets=["tx@2"], parent="churn/3")
    reg.aliases.update(
        {("churn", "production"): 4, ("churn", "staging"): 2, ("fraud", "production"): 2}
    )
    return reg


def run(name, inputs, reg, tmp_path: Path, **kw):
    rec = MemoryRecorder()
    inputs = {**inputs, "report_dir": str(tmp_path / "report")}
    result = run_incident(name, inputs, fake_actions(reg), rec, **kw)
    assert result.status == "completed", result.detail
    assert (tmp_path / "report" / f"incident-{result.incident_id}.md").exists()
    return result


def state(reg, ref):
    name, version = ref.split("/")
    return reg.models[name][int(version)].state


def test_data_poisoning(tmp_path, monkeypatch):
    reg = registry()
    monkeypatch.setenv("ASSAY_WEBHOOK_SECRET", "x")
    notes = tmp_path / "notes.jsonl"
    run(
        "data-poisoning",
        {"dataset": "customers@3", "reason": "label flips", "notify_file": str(notes)},
        reg,
        tmp_path,
    )
    assert reg.datasets["customers@3"] == "quarantined"
    assert reg.frozen == {"churn", "fraud"}
    assert reg.aliases == {
        ("churn", "production"): 2,
        ("churn", "staging"): 2,
        ("fraud", "production"): 1,
    }
    assert [state(reg, r) for r in ("churn/3", "churn/4", "fraud/2")] == ["compromised"] * 3
    assert state(reg, "churn/2") == "known-good"
    note = json.loads(notes.read_text())
    assert note["data"]["affected_versions"] == ["churn/3", "churn/4", "fraud/2"]
    assert "label flips" in note["message"] and note["severity"] == "critical"


def test_backdoored_model(tmp_path):
    reg = registry()
    run("backdoored-model", {"model": "churn/3", "reason": "trigger found"}, reg, tmp_path)
    assert state(reg, "churn/3") == "compromised"
    assert state(reg, "churn/4") == "quarantined" and state(reg, "fraud/2") == "quarantined"
    assert reg.aliases[("churn", "production")] == 2 and reg.aliases[("fraud", "production")] == 1
    assert reg.frozen == {"churn", "fraud"}


def test_tampered_artifact(tmp_path):
    reg = registry()
    reg.models["churn"][4].bytes_ok = False
    result = run("tampered-artifact", {}, reg, tmp_path)
    assert state(reg, "churn/4") == "quarantined"
    assert reg.aliases[("churn", "production")] == 3
    assert reg.aliases[("churn", "staging")] == 2
    verify = next(s for s in result.steps if s.step_id == "verify")
    assert verify.outputs["failed"] == ["churn/4"] and verify.outputs["checked"] == 6


def test_signing_key_compromise(tmp_path):
    reg = registry()
    for n in (3, 4):
        reg.models["churn"][n].signed_at = "2024-06-01T00:00:00+00:00"
    inputs = {"key_id": "key-1", "compromised_since": "2024-05-01T00:00:00Z", "new_key_id": "key-2"}
    rec = MemoryRecorder()
    waiting = run_incident("signing-key-compromise", inputs, fake_actions(reg), rec)
    assert waiting.status == "waiting-approval" and waiting.waiting_step == "revoke"
    assert reg.revoked == {}  # the gate stopped before revoking
    run("signing-key-compromise", inputs, reg, tmp_path, assume_yes=True)
    assert reg.revoked == {"key-1": "2024-05-01T00:00:00+00:00"}
    assert state(reg, "churn/3") == "quarantined" and state(reg, "churn/4") == "quarantined"
    assert reg.aliases[("churn", "production")] == 2
    assert {reg.models["churn"][n].key_id for n in (1, 2)} == {"key-2"}
    assert reg.models["churn"][4].key_id == "key-1"


def test_model_theft(tmp_path, monkeypatch):
    reg = registry()
    suspect = tmp_path / "found.onnx"
    reg.suspects[str(suspect)] = ("churn/2", 3e-12)
    notes = tmp_path / "notes.jsonl"
    result = run("model-theft", {"suspect": str(suspect), "notify_file": str(notes)}, reg, tmp_path)
    trace = next(s for s in result.steps if s.step_id == "trace")
    assert trace.outputs["match"] and trace.outputs["p_value"] == 3e-12
    assert json.loads(notes.read_text())["data"]["version"] == "churn/2"
    md = next(p for p in os.listdir(tmp_path / "report") if p.endswith(".md"))
    assert "3e-12" in (tmp_path / "report" / md).read_text()
    assert reg.events == []  # tracing changes nothing


def test_model_theft_without_match_does_not_notify(tmp_path):
    result = run(
        "model-theft",
        {"suspect": str(tmp_path / "x"), "notify_file": str(tmp_path / "n")},
        registry(),
        tmp_path,
    )
    assert next(s for s in result.steps if s.step_id == "notify").status == "skipped"
    assert not (tmp_path / "n").exists()


def test_adversarial_evasion(tmp_path):
    reg = registry()
    run("adversarial-evasion", {"model": "churn"}, reg, tmp_path)
    assert reg.aliases[("churn", "production")] == 1  # newest known-good tagged robust
    assert reg.frozen == {"churn"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dry_run_of_every_builtin(name):
    inputs = {
        "data-poisoning": {"dataset": "customers@3", "reason": "r"},
        "backdoored-model": {"model": "churn/3", "reason": "r"},
        "tampered-artifact": {},
        "signing-key-compromise": {"key_id": "k", "compromised_since": "2024-05-01T00:00:00Z"},
        "model-theft": {"suspect": "/tmp/x"},
        "model-extraction": {"client": "mallory"},
        "adversarial-evasion": {"model": "churn"},
    }[name]
    reg = registry()
    result = run_incident(name, inputs, fake_actions(reg), MemoryRecorder(), dry_run=True)
    assert result.status == "planned" and len(result.plan) == len(load_playbook(name).steps)
    assert all(p.description for p in result.plan)
    assert reg.events == []

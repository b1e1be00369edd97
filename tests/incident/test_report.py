"""Incident reports: md, json, html (escaped, self-contained), timeline, changes, evidence, threats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.core.errors import FormatError
from assay.incident._records import Incident, StepRecord
from assay.incident.engine import MemoryRecorder, run_incident
from assay.incident.playbook import load_playbook
from assay.incident.report import build_report, render_report
from assay.testing.fakes import FakeRegistry, fake_actions


@pytest.fixture
def incident(tmp_path: Path):
    reg = FakeRegistry()
    reg.add("churn", 1, datasets=["customers@2"])
    reg.add("churn", 2, datasets=["customers@3"])
    reg.add("churn", 3, datasets=["customers@3"], bytes_ok=False)
    reg.aliases[("churn", "production")] = 3
    rec = MemoryRecorder()
    pb = load_playbook("tampered-artifact")
    result = run_incident(
        pb, {"model": "churn", "report_dir": str(tmp_path)}, fake_actions(reg), rec
    )
    assert result.status == "completed"
    return rec.get_incident(result.incident_id), rec.get_steps(result.incident_id), pb, tmp_path


def test_markdown(incident):
    inc, steps, pb, _ = incident
    md = render_report(inc, steps, pb, {"checkpoint": {"size": 12, "root": "ab12"}}, fmt="md")
    assert md.startswith(f"# Incident {inc.id}: tampered-artifact")
    assert "`AML.T0010` AI Supply Chain Compromise" in md
    assert "`ML06:2023` OWASP ML06: AI Supply Chain Attacks" in md
    assert "## Timeline" in md and "| verify | registry.verify | succeeded |" in md
    assert "**rollback[0]**: churn@production: v3 -> v2" in md
    assert "**quarantine**: churn/3 marked quarantined" in md
    assert "bytes changed" in md  # verification evidence
    assert '"root": "ab12"' in md


def test_json(incident):
    inc, steps, pb, _ = incident
    data = json.loads(render_report(inc, steps, pb, fmt="json"))
    assert data["incident"]["id"] == inc.id
    assert {"id": "AML.T0018", "name": "Manipulate AI Model (formerly Backdoor ML Model)"} in data[
        "playbook"
    ]["threats"]
    (verify,) = [e for e in data["evidence"] if e["step"] == "verify"]
    assert verify["failed"] == ["churn/3"]
    assert {"version": "churn/3", "ok": False, "reason": "bytes changed"} in verify["results"]
    assert [c["step"] for c in data["changes"]] == ["quarantine", "rollback[0]"]


def test_html_is_escaped_and_self_contained():
    inc = Incident(
        "inc-<1>",
        "pb",
        "sha256:x",
        {"reason": "<script>alert(1)</script>"},
        "failed",
        detail="step 'a' failed: <b>",
    )
    steps = [
        StepRecord(
            "inc-<1>",
            "trace",
            None,
            "succeeded",
            {"match": True, "p_value": 1e-12, "version": "m/1", "summary": "<img src=x>"},
            None,
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:01",
        ),
        StepRecord(
            "inc-<1>", "freeze", None, "failed", None, "boom & <bust>", "2024-01-01T00:00:02"
        ),
    ]
    page = render_report(inc, steps, None, fmt="html")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<img" not in page and "boom &amp; &lt;bust&gt;" in page
    assert "<link" not in page and "src=" not in page.replace("src=x", "")
    assert "&quot;p_value&quot;: 1e-12" in page
    data = build_report(inc, steps, None)
    assert data["problems"] == [{"step": "freeze", "kind": "failed", "message": "boom & <bust>"}]


def test_report_write_action_wrote_files(incident):
    inc, steps, _, folder = incident
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"incident-{inc.id}.{ext}" for ext in ("html", "json", "md")]
    report = next(s for s in steps if s.step_id == "report")
    assert report.outputs["paths"][0].startswith(str(folder))


def test_default_report_folder_is_under_assay_home(assay_home: Path):
    reg = FakeRegistry()
    reg.suspects["/tmp/x.onnx"] = ("churn/1", 1e-9)
    rec = MemoryRecorder()
    result = run_incident("model-theft", {"suspect": "/tmp/x.onnx"}, fake_actions(reg), rec)
    assert result.status == "completed"
    folder = assay_home / "incidents" / result.incident_id
    md = (folder / f"incident-{result.incident_id}.md").read_text()
    assert "p_value" in md and "churn/1" in md


def test_unknown_format(incident):
    inc, steps, pb, _ = incident
    with pytest.raises(FormatError, match="unknown report format"):
        render_report(inc, steps, pb, fmt="pdf")


def test_report_on_disk_describes_the_finished_incident(incident):
    """report.write runs while the incident is running; the files end up with its final status."""
    inc, _, _, folder = incident
    assert inc.status == "completed"
    md = (folder / f"incident-{inc.id}.md").read_text()
    assert "- **Status:** completed" in md and "running" not in md
    html = (folder / f"incident-{inc.id}.html").read_text()
    assert "<b>Status:</b> completed" in html
    data = json.loads((folder / f"incident-{inc.id}.json").read_text())
    assert data["incident"]["status"] == "completed"
    (report,) = [t for t in data["timeline"] if t["step"] == "report"]
    assert report["status"] == "succeeded" and report["finished_at"]


def test_report_of_an_incident_that_failed_after_it_says_failed(tmp_path: Path):
    text = f"""\
id: late-failure
severity: low
steps:
  - id: report
    action: report.write
    with: {{directory: "{tmp_path}", formats: [md, json]}}
  - id: boom
    action: registry.mark
    with: {{versions: [ghost/1], state: compromised}}
"""
    reg = FakeRegistry()
    rec = MemoryRecorder()
    from assay.incident.playbook import parse_playbook

    result = run_incident(parse_playbook(text, "late.yaml"), {}, fake_actions(reg), rec)
    assert result.status == "failed"
    md = (tmp_path / f"incident-{result.incident_id}.md").read_text()
    assert "- **Status:** failed (step 'boom' failed:" in md
    data = json.loads((tmp_path / f"incident-{result.incident_id}.json").read_text())
    assert data["incident"]["status"] == "failed"
    assert [t["status"] for t in data["timeline"]] == ["succeeded", "failed"]

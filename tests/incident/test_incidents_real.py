"""Every built-in playbook end to end through `assay incident run` on a real registry (embedded
MLflow; the store on SQLite and on PostgreSQL), playbooks refused before anything runs, and
approval gates on a non-terminal. One ASSAY_HOME per module (the signing-key drill gets its own: it revokes the key
everything else is signed with)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import rb_fixtures as rb  # noqa: E402
from click.testing import CliRunner

from assay.cli import cli

pytestmark = pytest.mark.slow
world = rb.world_fixture()
PLAYBOOKS = Path(__file__).parents[2] / "playbooks"


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def run_incident(*args: object) -> dict[str, Any]:
    out = invoke("incident", "run", *args, "--json")
    assert out.exit_code == 0, (out.stdout, out.stderr)
    data = json.loads(out.stdout)
    assert data["status"] == "completed", data
    return data


def outputs(data: dict[str, Any], step: str) -> dict[str, Any]:
    return next(s for s in data["steps"] if s["step_id"] == step and s["item_index"] is None)[
        "outputs"
    ]


def check_report(home: Path, incident_id: str, threats: list[str], *steps: str) -> None:
    folder = home / "incidents" / incident_id
    files = {p.suffix for p in folder.iterdir()}
    assert files == {".md", ".json", ".html"}, files
    report = json.loads((folder / f"incident-{incident_id}.json").read_text())
    text = json.dumps(report)
    for threat in threats:
        assert threat in text
    md = (folder / f"incident-{incident_id}.md").read_text()
    assert "imeline" in md, md[:500]
    assert "- **Status:** completed" in md  # written while running, brought up to date at the end
    assert report["incident"]["status"] == "completed"
    for step in steps:
        assert step in md
    # The CLI renders the same report on demand.
    for fmt in ("md", "json", "html"):
        out = invoke("incident", "report", incident_id, "--format", fmt)
        assert out.exit_code == 0 and incident_id in out.stdout


def audit_verifies() -> None:
    out = invoke("audit", "verify")
    assert out.exit_code == 0, (out.stdout, out.stderr)


# --- data poisoning ------------------------------------------------------------------------


def test_data_poisoning_drill(world):
    reg = world.registry
    drill = rb.build_drill(reg, world.root)
    name = drill.model
    # A second model: v1 on the clean data, v2 fine-tuned from the poisoned churn v3, serving.
    other = rb.unique("fraud")
    rb.model(reg, other, world.root, datasets=(f"{drill.dataset}@1",))
    rb.model(reg, other, world.root, parents=(f"{name}/3",), alias="production")
    rb.mark(reg, other, "1", "known-good")
    notes = world.root / f"notify-{name}.jsonl"

    data = run_incident(
        "data-poisoning",
        "--set",
        f"dataset={drill.poisoned}",
        "--set",
        "reason=label flipping found in batch 7",
        "--set",
        f"notify_file={notes}",
        "--yes",
    )
    incident_id = data["incident_id"]
    radius = outputs(data, "radius")
    assert radius["versions"] == [f"{other}/2", f"{name}/3"] or sorted(
        radius["versions"]
    ) == sorted([f"{other}/2", f"{name}/3"])

    # Production is back on versions with clean lineage.
    assert reg.backend.get_alias(name, "production") == "2"
    assert reg.backend.get_alias(other, "production") == "1"
    states = rb.states(reg)
    assert states[f"dataset:{drill.dataset}/2"] == "quarantined"
    assert states[f"dataset:{drill.dataset}/1"] == "registered"
    assert states[f"model:{name}/3"] == "compromised"
    assert states[f"model:{other}/2"] == "compromised"
    assert states[f"model:{name}/2"] == states[f"model:{name}/1"] == "known-good"
    assert {name, other} <= rb.frozen(reg)
    assert rb.alias_moves(reg, name)[-1] == ("3", "2", "rollback")
    assert rb.alias_moves(reg, other)[-1] == ("2", "1", "rollback")
    lines = notes.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["incident"] == incident_id

    check_report(
        world.home,
        incident_id,
        ["AML.T0020", "ML02:2023"],
        "quarantine",
        "radius",
        "freeze",
        "rollback",
        "mark",
    )
    # The HTML report draws the blast radius: poisoned dataset -> affected versions -> aliases.
    page = (world.home / "incidents" / incident_id / f"incident-{incident_id}.html").read_text()
    svg = ET.fromstring(page[page.index("<svg") : page.index("</svg>") + len("</svg>")])
    marked = {
        g.get("data-ref"): g.get("data-affected") for g in svg.iter("{http://www.w3.org/2000/svg}g")
    }
    assert marked[f"dataset:{drill.dataset}@2"] == "true"
    assert marked[f"models:/{name}/3"] == marked[f"models:/{other}/2"] == "true"
    assert marked[f"alias:{name}@production"] == marked[f"alias:{other}@production"] == "true"
    assert f"models:/{name}/1" not in marked  # trained on the clean version: not in the radius
    # `assay lineage --format svg` draws the same picture now.
    drawn = invoke("lineage", f"dataset:{drill.dataset}@2", "--format", "svg")
    assert drawn.exit_code == 0, drawn.stderr
    now = {g.get("data-ref") for g in ET.fromstring(drawn.stdout).iter()}
    assert {f"models:/{name}/3", f"models:/{other}/2"} <= now

    listed = json.loads(invoke("incident", "list", "--json").stdout)
    assert any(i["id"] == incident_id and i["status"] == "completed" for i in listed)
    shown = json.loads(invoke("incident", "show", incident_id, "--json").stdout)
    assert {s["step_id"] for s in shown["steps"]} >= {"quarantine", "rollback", "report"}
    audit_verifies()

    # Running the same incident again changes nothing in the registry.
    before = rb.registry_state(reg, [name, other])
    run_incident(
        "data-poisoning", "--set", f"dataset={drill.poisoned}", "--set", "reason=again", "--yes"
    )
    assert rb.registry_state(reg, [name, other]) == before


# --- the other built-in playbooks ------------------------------------------------------------


def test_backdoored_model(world):
    reg = world.registry
    drill = rb.build_drill(reg, world.root, "bd")
    name = drill.model
    child = rb.unique("bd-child")
    rb.model(reg, child, world.root, parents=(f"{name}/3",))

    data = run_incident(
        "backdoored-model", "--set", f"model={name}/3", "--set", "reason=trigger found", "--yes"
    )
    assert reg.backend.get_alias(name, "production") == "2"
    states = rb.states(reg)
    assert states[f"model:{name}/3"] == "compromised"
    assert states[f"model:{child}/1"] == "quarantined"
    assert name in rb.frozen(reg)
    check_report(world.home, data["incident_id"], ["AML.T"], "mark_model", "rollback")
    audit_verifies()


def test_tampered_artifact(world):
    reg = world.registry
    name = rb.build_drill(reg, world.root, "tamp").model
    rb.tamper(reg, name, "3")  # the serving version's bytes change in the artifact store

    data = run_incident("tampered-artifact", "--set", f"model={name}", "--yes")
    verify = outputs(data, "verify")
    assert verify["failed"] == [f"{name}/3"]
    assert verify["passed"] == [f"{name}/1", f"{name}/2"]
    assert rb.state_of(reg, name, "3") == "quarantined"
    assert reg.backend.get_alias(name, "production") == "2"
    check_report(world.home, data["incident_id"], ["AML.T"], "verify", "rollback")
    audit_verifies()


def test_adversarial_evasion_rolls_back_to_a_robust_version(world):
    reg = world.registry
    name = rb.build_drill(reg, world.root, "adv").model
    labelled = invoke(
        "label", name, "1", "--add", "robust", "--reason", "passed PGD eval", "--json"
    )
    assert labelled.exit_code == 0, labelled.output
    assert json.loads(labelled.stdout)["labels"] == ["robust"]

    data = run_incident("adversarial-evasion", "--set", f"model={name}", "--yes")
    assert reg.backend.get_alias(name, "production") == "1"
    assert name in rb.frozen(reg)
    assert rb.state_of(reg, name, "3") == "quarantined"
    assert rb.state_of(reg, name, "2") == "known-good"
    assert outputs(data, "rollback")["to_version"] == "1"
    check_report(world.home, data["incident_id"], ["AML.T"], "rollback", "freeze")


def test_adversarial_evasion_without_a_robust_version_fails_and_lists_why(world):
    reg = world.registry
    name = rb.build_drill(reg, world.root, "adv-none").model
    before = reg.backend.aliases(name)
    out = invoke("incident", "run", "adversarial-evasion", "--set", f"model={name}", "--yes")
    assert out.exit_code == 1
    assert "not labelled robust" in out.stdout + out.stderr
    assert reg.backend.aliases(name) == before


def _mlp_folder(root: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512))
    folder = root / f"mlp-{rb.unique('m')}"
    folder.mkdir()
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, folder / "model.safetensors"
    )
    (folder / "config.json").write_text('{"layers": [512, 512, 512]}')
    return folder


def test_model_theft_traces_a_noised_copy(world):
    import numpy as np
    from safetensors.numpy import load_file, save_file

    pytest.importorskip("torch")
    reg = world.registry
    name = rb.unique("mlp")
    rb.model(reg, name, world.root, source=_mlp_folder(world.root), watermark=True)
    served = rb.stored_folder(reg, name, "1") / "model.safetensors"
    tensors = load_file(str(served))
    rng = np.random.default_rng(7)
    stolen = {
        k: (v + rng.normal(0, 0.01 * float(v.std()), v.shape)).astype(v.dtype)
        for k, v in tensors.items()
    }
    suspect = world.root / "suspect"
    suspect.mkdir()
    save_file(stolen, str(suspect / "model.safetensors"))

    data = run_incident(
        "model-theft", "--set", f"suspect={suspect}", "--set", f"models={name}", "--yes"
    )
    trace = outputs(data, "trace")
    assert trace["match"] is True, trace["summary"]
    assert trace["version"] == f"{name}/1"
    assert trace["p_value"] < 1e-9
    check_report(world.home, data["incident_id"], ["AML.T"], "trace")
    report = json.loads(
        (
            world.home / "incidents" / data["incident_id"] / f"incident-{data['incident_id']}.json"
        ).read_text()
    )
    assert "p_value" in json.dumps(report)


@pytest.fixture(params=rb.STORE_BACKENDS)
def own_home(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A home of the test's own, on each store backend."""
    for home in rb.backend_home(request.param, tmp_path / "home"):
        rb.open_in(monkeypatch, home)
        yield home


def test_signing_key_compromise(own_home, tmp_path):
    """Own home: the drill revokes the key everything is signed with."""
    import time
    from datetime import datetime, timezone

    from sqlalchemy import select

    from assay.store.models import Signature

    home = own_home
    reg = rb.init_home(home)
    old_key = reg.keys.signing_key()[1].key_id
    ds, name = rb.unique("kds"), rb.unique("keyed")
    rb.dataset(reg, ds, tmp_path)
    rb.model(reg, name, tmp_path, datasets=(f"{ds}@1",))
    rb.model(reg, name, tmp_path, datasets=(f"{ds}@1",))
    for v in ("1", "2"):
        rb.mark(reg, name, v, "known-good")
    time.sleep(1.1)
    compromised = datetime.now(timezone.utc).replace(microsecond=0)
    time.sleep(1.1)
    rb.model(reg, name, tmp_path, datasets=(f"{ds}@1",), alias="production")
    rb.mark(reg, name, "3", "known-good")
    # The responder acts with a key of their own: the compromised key cannot sign the quarantine.
    new_key = reg.keys.generate(name="replacement", roles=["admin"]).key_id
    reg.keys.keyring.set_default("replacement")

    args = [
        "incident",
        "run",
        "signing-key-compromise",
        "--set",
        f"key_id={old_key}",
        "--set",
        f"compromised_since={compromised.isoformat()}",
        "--set",
        f"new_key_id={new_key}",
        "--json",
    ]
    # Without --yes on a non-terminal the approval gate stops the incident; nothing revoked.
    size = rb.audit_size(reg)
    waiting = invoke(*args)
    assert waiting.exit_code == 0, waiting.stderr
    data = json.loads(waiting.stdout)
    assert data["status"] == "waiting-approval" and data["waiting_step"] == "revoke"
    assert reg.keys.get(old_key).status != "revoked"
    assert reg.backend.get_alias(name, "production") == "3"
    assert rb.audit_size(reg) > size  # the incident itself is recorded

    done = invoke("incident", "resume", data["incident_id"], "--yes", "--json")
    assert done.exit_code == 0, (done.stdout, done.stderr)
    result = json.loads(done.stdout)
    assert result["status"] == "completed", result
    verify = outputs(result, "verify")
    assert verify["failed"] == [f"{name}/3"], verify
    assert verify["passed"] == [f"{name}/1", f"{name}/2"], verify
    assert rb.state_of(reg, name, "3") == "quarantined"
    assert reg.backend.get_alias(name, "production") == "2"
    assert outputs(result, "resign")["resigned"] == [f"{name}/1", f"{name}/2"]
    with reg.store.session(readonly=True) as session:
        signers = set(session.scalars(select(Signature.key_id)))
    assert new_key in signers
    from assay.registry.uri_verify import verify_version

    assert verify_version(reg, name, "2").ok
    assert not verify_version(reg, name, "3").ok
    check_report(home, data["incident_id"], ["AML.T"], "revoke", "resign")
    rb.audit_verify(home)


# --- refused before anything runs ------------------------------------------------------------


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = (PLAYBOOKS / "data-poisoning.yaml").read_text()
    assert old in text
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('dataset: "{{ inputs.dataset }}"', 'dataset: "{{ inputs.dataset "', "template"),
        ("action: dataset.quarantine", "action: dataset.quarantinee", "unknown action"),
        (
            'source: "dataset:{{ inputs.dataset }}"',
            'source: "{{ steps.rollback.outputs.x }}"',
            "cycle",
        ),
        (None, None, "needs input"),
    ],
    ids=["bad-template", "unknown-action", "cycle", "missing-input"],
)
def test_refused_before_anything_runs(world, tmp_path, old, new, fragment):
    reg = world.registry
    drill = rb.build_drill(reg, world.root, "refuse")
    size, incidents = (
        rb.audit_size(reg),
        len(json.loads(invoke("incident", "list", "--json").stdout)),
    )
    state = rb.registry_state(reg, [drill.model])
    if old is None:
        ref, sets = "data-poisoning", ["--set", f"dataset={drill.poisoned}"]  # no reason
    else:
        ref = _variant(tmp_path, old, new)
        sets = ["--set", f"dataset={drill.poisoned}", "--set", "reason=x"]
    out = invoke("incident", "run", ref, *sets, "--yes")
    assert out.exit_code == 1, (out.stdout, out.stderr)
    assert fragment in out.stderr, out.stderr
    if old is not None:
        assert "broken.yaml:" in out.stderr  # file and line
    assert rb.audit_size(reg) == size
    assert len(json.loads(invoke("incident", "list", "--json").stdout)) == incidents
    assert rb.registry_state(reg, [drill.model]) == state


def test_approval_gate_on_a_non_terminal_waits_then_resumes(world, tmp_path):
    reg = world.registry
    drill = rb.build_drill(reg, world.root, "gate")
    path = _variant(
        tmp_path,
        "    action: registry.rollback\n",
        "    action: registry.rollback\n    approval: Roll back {{ item.model }}?\n",
    )
    sets = ["--set", f"dataset={drill.poisoned}", "--set", "reason=gate"]
    out = invoke("incident", "run", path, *sets, "--json")  # no --yes, not a terminal
    assert out.exit_code == 0, (out.stdout, out.stderr)
    data = json.loads(out.stdout)
    assert data["status"] == "waiting-approval" and data["waiting_step"] == "rollback"
    assert reg.backend.get_alias(drill.model, "production") == "3"  # not moved yet
    assert drill.model in rb.frozen(reg)  # the steps before the gate ran

    again = json.loads(invoke("incident", "resume", data["incident_id"], "--json").stdout)
    assert again["status"] == "waiting-approval"  # still no --yes
    done = invoke("incident", "resume", data["incident_id"], "--yes", "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    assert reg.backend.get_alias(drill.model, "production") == "2"
    assert rb.state_of(reg, drill.model, "3") == "compromised"

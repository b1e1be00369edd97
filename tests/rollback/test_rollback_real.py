"""`rollback` on a real registry (embedded MLflow; the store on SQLite and on PostgreSQL): target choice, refusals with
every candidate listed, dry runs, ``--to``, tampered bytes, quarantined lineage, freezes and the
confirmation on a non-terminal. One ASSAY_HOME per module; each test registers its own models."""

from __future__ import annotations

import json

import pytest
import rb_fixtures as rb  # noqa: E402
from click.testing import CliRunner

from assay.cli import cli
from assay.core.errors import RefusedError
from assay.rollback.execute import NoRollbackTarget, rollback

pytestmark = pytest.mark.slow

world = rb.world_fixture()


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def snapshot(registry, name: str) -> dict:
    return {
        "aliases": registry.backend.aliases(name),
        "states": rb.states(registry),
        "audit": rb.audit_size(registry),
        "moves": rb.alias_moves(registry, name),
    }


def test_rolls_back_to_the_newest_known_good_version(world):
    reg = world.registry
    drill = rb.build_drill(reg, world.root)
    name = drill.model
    assert reg.backend.get_alias(name, "production") == "3"

    result = rollback(reg, name, reason="bad predictions")

    assert (result.from_version, result.to_version, result.moved) == ("3", "2", True)
    assert result.quarantined == "3"
    assert result.seconds_to_alias_moved is not None
    assert result.seconds_to_alias_moved <= result.seconds_total
    assert reg.backend.get_alias(name, "production") == "2"  # read from MLflow
    assert rb.state_of(reg, name, "3") == "quarantined"
    assert rb.alias_moves(reg, name)[-1] == ("3", "2", "rollback")
    tags = {v.version: (v.tags or {}).get("assay.state") for v in reg.backend.list_versions(name)}
    assert tags["3"] == "quarantined"
    actions = [e.action for e in reg.audit.events(0) if e.subject == f"models:/{name}@production"]
    assert actions[-2:] == ["rollback.intent", "rollback.done"]

    # Not repeated by accident: going further back needs --to.
    with pytest.raises(RefusedError, match="already rolled back"):
        rollback(reg, name, reason="again")
    assert reg.backend.get_alias(name, "production") == "2"
    rb.audit_verify(world.home)


def test_refuses_and_lists_every_candidate(world):
    reg = world.registry
    drill = rb.build_drill(reg, world.root)
    name = drill.model
    rb.mark(reg, name, "2", "compromised", reason="bad")
    rb.mark(reg, name, "1", "quarantined", reason="suspicious")
    before = snapshot(reg, name)

    with pytest.raises(NoRollbackTarget) as caught:
        rollback(reg, name, reason="x")
    plan = caught.value.plan
    assert [(c.version, c.eligible) for c in plan.candidates] == [("2", False), ("1", False)]
    assert plan.candidates[0].reasons == ["state is compromised"]
    assert plan.candidates[1].reasons == ["state is quarantined"]
    assert "v2: state is compromised" in str(caught.value)
    assert "v1: state is quarantined" in str(caught.value)

    text = invoke("rollback", name, "--yes")
    assert text.exit_code == 1, text.output
    assert "no version to roll" in text.stderr
    for fragment in ("compromised", "quarantined", "candidates, newest first"):
        assert fragment in text.stderr, text.stderr

    as_json = invoke("rollback", name, "--yes", "--json")
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["ok"] is False
    assert [c["version"] for c in data["plan"]["candidates"]] == ["2", "1"]
    assert all(c["reasons"] for c in data["plan"]["candidates"])
    assert snapshot(reg, name) == before


def test_dry_run_changes_nothing(world):
    reg = world.registry
    name = rb.build_drill(reg, world.root).model
    before = snapshot(reg, name)

    out = invoke("rollback", name, "--dry-run", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["dry_run"] is True and data["to_version"] == "2" and data["moved"] is False
    text = invoke("rollback", name, "--dry-run")
    assert text.exit_code == 0 and "would move" in text.stdout
    assert snapshot(reg, name) == before


def test_to_a_chosen_version(world):
    reg = world.registry
    name = rb.build_drill(reg, world.root).model
    out = invoke("rollback", name, "--to", "1", "--yes", "--json", "--reason", "pin v1")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert (data["from_version"], data["to_version"], data["moved"]) == ("3", "1", True)
    assert reg.backend.get_alias(name, "production") == "1"
    assert rb.state_of(reg, name, "3") == "quarantined"
    assert rb.state_of(reg, name, "2") == "known-good"  # skipped over, untouched

    missing = invoke("rollback", name, "--to", "9", "--yes")
    assert missing.exit_code == 1 and "no version 9" in missing.stderr


def test_tampered_candidate_is_skipped(world):
    reg = world.registry
    name = rb.build_drill(reg, world.root).model
    rb.tamper(reg, name, "2")

    result = rollback(reg, name, reason="tampered test", dry_run=True)
    first, second = result.plan["candidates"]
    assert first["version"] == "2" and not first["eligible"]
    assert any("fails verification" in r for r in first["reasons"]), first
    assert second == {"version": "1", "state": "known-good", "eligible": True, "reasons": []}

    done = rollback(reg, name, reason="tampered test")
    assert done.to_version == "1" and reg.backend.get_alias(name, "production") == "1"


def test_quarantined_dataset_lineage_is_skipped(world):
    from assay.registry.states import mark

    reg = world.registry
    ds, name = rb.unique("ds"), rb.unique("lin")
    rb.dataset(reg, ds, world.root)
    rb.dataset(reg, ds, world.root)
    rb.model(reg, name, world.root, datasets=(f"{ds}@1",))
    rb.model(reg, name, world.root, datasets=(f"{ds}@2",))
    rb.model(reg, name, world.root, datasets=(f"{ds}@1",), alias="production")
    for v in "123":
        rb.mark(reg, name, v, "known-good")
    mark(reg, ds, "2", "quarantined", reason="poisoned", kind="dataset")

    result = rollback(reg, name, reason="lineage")
    assert result.to_version == "1"
    skipped = result.plan["candidates"][0]
    assert skipped["version"] == "2"
    assert skipped["reasons"] == [f"lineage: dataset:{ds}@2 is quarantined"]


def test_freeze_blocks_promote_but_not_rollback(world):
    from assay.registry.states import freeze, promote

    reg = world.registry
    name = rb.build_drill(reg, world.root).model
    freeze(reg, name, reason="incident drill")
    with pytest.raises(RefusedError, match="frozen"):
        promote(reg, name, "1")
    assert reg.backend.get_alias(name, "production") == "3"

    result = rollback(reg, name, reason="frozen but rolled back")
    assert result.moved and reg.backend.get_alias(name, "production") == "2"


def test_non_terminal_without_yes_refuses_and_changes_nothing(world):
    reg = world.registry
    name = rb.build_drill(reg, world.root).model
    before = snapshot(reg, name)
    out = invoke("rollback", name)  # CliRunner: not a terminal
    assert out.exit_code == 2, out.output
    assert "--yes" in out.stderr
    assert snapshot(reg, name) == before


def test_rolling_back_a_model_without_the_alias(world):
    reg = world.registry
    name = rb.unique("noalias")
    rb.model(reg, name, world.root)
    out = invoke("rollback", name, "--yes")
    assert out.exit_code == 1 and "nothing serves" in out.stderr

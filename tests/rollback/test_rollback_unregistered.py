"""Rollback when the serving version was never registered through assay (plain MLflow put it
behind ``production``): the rollback completes, quarantines nothing it cannot identify (and says
so), and a re-run after a crash completes the open intent. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rb_fixtures as rb  # noqa: E402
from store_backends import PG_URL, STORE_BACKENDS, reset_postgres

from assay.core.errors import RefusedError
from assay.rollback.execute import rollback

pytestmark = pytest.mark.slow


@dataclass
class StoreWorld:
    home: Path
    registry: Any
    root: Path
    env: dict[str, str]  # what a CLI subprocess needs beyond ASSAY_HOME


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoreWorld]:
    base = tmp_path_factory.mktemp(f"rb-unregistered-{request.param}")
    home = base / "home"
    extra = {}
    with pytest.MonkeyPatch.context() as mp:
        for var in (*rb.CLEARED, rb.CRASH_ENV):
            mp.delenv(var, raising=False)
        if request.param == "postgresql":
            assert PG_URL
            reset_postgres(PG_URL)
            mp.setenv("ASSAY_DB_URL", PG_URL)
            extra["ASSAY_DB_URL"] = PG_URL
        mp.setenv("ASSAY_HOME", str(home))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        mp.setenv("HF_HUB_OFFLINE", "1")
        registry = rb.init_home(home)
        assert registry.store.dialect == request.param
        yield StoreWorld(home, registry, base, extra)


def plain_mlflow_version(registry: Any, name: str, root: Path) -> str:
    """What ``mlflow.register_model`` does: log the files, create a version; nothing of assay."""
    backend = registry.backend
    logged = backend.log_model_dir(rb.folder(root, name), artifact_path="model")
    return backend.create_version(name, logged.source_uri, run_id=logged.run_id).version


def serving_unregistered(world: StoreWorld, prefix: str) -> str:
    """Versions 1, 2 (assay, known-good, 2 promoted), then 3 from plain MLflow put behind
    production with plain MLflow."""
    reg, name = world.registry, rb.unique(prefix)
    for _ in range(2):
        rb.model(reg, name, world.root)
    rb.mark(reg, name, "1", "known-good")
    rb.mark(reg, name, "2", "known-good")
    from assay.registry.states import promote

    promote(reg, name, "2")
    assert plain_mlflow_version(reg, name, world.root) == "3"
    reg.backend.set_alias(name, "production", "3")
    return name


def test_rollback_completes_and_quarantines_nothing_it_cannot_identify(world: StoreWorld) -> None:
    reg = world.registry
    name = serving_unregistered(world, "plain")
    before = rb.states(reg)
    result = rollback(reg, name, reason="bad predictions")
    assert (result.from_version, result.to_version, result.moved) == ("3", "2", True)
    assert result.quarantined is None
    assert (
        result.not_quarantined == "replaced version 3 is not registered with assay: not quarantined"
    )
    assert reg.backend.get_alias(name, "production") == "2"
    assert rb.alias_moves(reg, name)[-1] == ("3", "2", "rollback")
    assert rb.states(reg) == before  # nothing marked: v3 has no row, v1/v2 unchanged
    assert "assay.state" not in reg.backend.get_version(name, "3").tags
    actions = [e.action for e in reg.audit.events(0) if e.subject == f"models:/{name}@production"]
    assert actions[-2:] == ["rollback.intent", "rollback.done"]
    # Done, not stuck: a second plain rollback is the ordinary "already rolled back" refusal.
    with pytest.raises(RefusedError, match="already rolled back to 2"):
        rollback(reg, name, reason="again")


def test_rollback_to_a_chosen_version_over_an_unregistered_one(world: StoreWorld) -> None:
    reg = world.registry
    name = serving_unregistered(world, "plain-to")
    code = rb.cli(world.home, "rollback", name, "--to", "1", "--yes", "--json", **world.env)
    assert code.returncode == 0, code.stderr
    doc = json.loads(code.stdout)
    assert (doc["from_version"], doc["to_version"], doc["moved"]) == ("3", "1", True)
    assert doc["quarantined"] is None and "not registered with assay" in doc["not_quarantined"]
    text = rb.cli(world.home, "rollback", name, "--to", "2", "--yes", **world.env)
    assert text.returncode == 0, text.stderr
    assert f"{name}@production: moved 2 (was 1)" in text.stdout
    assert "version 1 quarantined" in text.stdout
    assert reg.backend.get_alias(name, "production") == "2"


@pytest.mark.parametrize("point", ["after-intent", "after-set-alias"])
def test_crashed_rollback_over_an_unregistered_version_completes_on_rerun(
    world: StoreWorld, point: str
) -> None:
    reg = world.registry
    name = serving_unregistered(world, f"plain-crash-{point}")
    crashed = rb.cli(
        world.home,
        "rollback",
        name,
        "--reason",
        "outage",
        "--yes",
        crash_at=f"rollback:{point}",
        **world.env,
    )
    assert crashed.returncode == 137, crashed.stderr
    expected = "2" if point == "after-set-alias" else "3"
    assert reg.backend.get_alias(name, "production") == expected
    assert rb.alias_moves(reg, name)[-1] != ("3", "2", "rollback")  # nothing recorded yet

    rerun = rb.cli(world.home, "rollback", name, "--reason", "outage", "--yes", **world.env)
    assert rerun.returncode == 0, rerun.stderr
    assert "replaced version 3 is not registered with assay: not quarantined" in rerun.stdout
    assert "finished a rollback that had been interrupted" in rerun.stdout
    assert reg.backend.get_alias(name, "production") == "2"
    assert rb.alias_moves(reg, name)[-1] == ("3", "2", "rollback")
    events = [e for e in reg.audit.events(0) if e.subject == f"models:/{name}@production"]
    assert [e.action for e in events][-2:] == ["rollback.intent", "rollback.done"]
    assert sum(e.action == "rollback.intent" for e in events) == 1
    rb.audit_verify(world.home)
    assert os.environ.get(rb.CRASH_ENV) is None

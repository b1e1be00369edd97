"""Lineage and blast radius over a real registry (store + embedded MLflow aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import registry_fixtures as fx  # noqa: E402

from assay.core.errors import AssayError, NotFoundError
from assay.registry.lineage import blast_radius, lineage
from assay.registry.states import mark
from assay.registry.versions import require_artifact
from assay.store.models import Lineage

world = fx.home_fixture()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tree(world: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """customers@1, @2; churn 1 (customers@1), 2 (customers@2, production), 3 (customers@1 and
    @2, staging); churn-ft 1 fine-tuned from churn/2 (production), churn-ft-ft 1 from churn-ft/1;
    other 1 trained on another dataset."""
    reg = world[1]
    root = tmp_path_factory.mktemp("lineage")
    n = {k: fx.unique(k) for k in ("customers", "events", "churn", "ft", "ftft", "other")}
    fx.dataset(reg, n["customers"], root)
    fx.dataset(reg, n["customers"], root)
    fx.dataset(reg, n["events"], root)
    c, ds = n["churn"], n["customers"]
    fx.model(reg, c, root, datasets=(f"{ds}@1",))
    fx.model(reg, c, root, datasets=(f"{ds}@2",), alias="production")
    fx.model(reg, c, root, datasets=(f"{ds}@1", f"{ds}@2"), alias="staging")
    fx.model(reg, n["ft"], root, parents=(f"{c}/2",), alias="production")
    fx.model(reg, n["ftft"], root, parents=(f"{n['ft']}/1",))
    fx.model(reg, n["other"], root, datasets=(f"{n['events']}@1",), alias="production")
    return n


def test_dataset_blast_radius_is_transitive_through_fine_tunes(
    world: Any, tree: dict[str, str]
) -> None:
    reg = world[1]
    c, ft, ftft = tree["churn"], tree["ft"], tree["ftft"]
    report = blast_radius(reg, f"dataset:{tree['customers']}@2")
    out = report.to_dict()
    assert out["direct"] == [f"{c}/2", f"{c}/3"]
    assert out["descendants"] == [f"{ft}/1", f"{ftft}/1"]
    assert out["versions"] == [f"{c}/2", f"{c}/3", f"{ft}/1", f"{ftft}/1"]
    assert out["affected_models"] == out["models"] == sorted([c, ft, ftft])
    assert (
        out["serving"]
        == out["aliases"]
        == sorted(
            [
                {"model": c, "alias": "production", "version": "2"},
                {"model": c, "alias": "staging", "version": "3"},
                {"model": ft, "alias": "production", "version": "1"},
            ],
            key=lambda d: (d["model"], d["alias"]),
        )
    )
    deepest = report.downstream[-1]
    assert (deepest.record.name, deepest.depth, deepest.relation, deepest.via) == (
        ftft,
        3,
        "fine-tuned-from",
        f"models:/{ft}/1",
    )
    assert tree["other"] not in out["models"]


def test_dataset_v1_radius(world: Any, tree: dict[str, str]) -> None:
    out = blast_radius(world[1], f"{tree['customers']}@1").to_dict()
    assert out["versions"] == [f"{tree['churn']}/1", f"{tree['churn']}/3"]
    assert out["serving"] == [{"model": tree["churn"], "alias": "staging", "version": "3"}]


def test_model_lineage_up_and_down(world: Any, tree: dict[str, str]) -> None:
    reg = world[1]
    c, ft, ftft, ds = tree["churn"], tree["ft"], tree["ftft"], tree["customers"]
    report = lineage(reg, f"models:/{ft}/1")
    assert report.subject_aliases == ["production"]
    assert [(e.record.ref, e.depth) for e in report.upstream] == [
        (f"models:/{c}/2", 1),
        (f"dataset:{ds}@2", 2),
    ]
    assert report.upstream[0].aliases == ["production"]
    assert [e.record.ref for e in report.downstream] == [f"models:/{ftft}/1"]
    out = report.to_dict()
    # As a blast-radius source, a model version is affected itself, with what derives from it.
    assert out["direct"] == [f"{ft}/1"] and out["versions"] == [f"{ft}/1", f"{ftft}/1"]
    assert out["serving"] == [{"model": ft, "alias": "production", "version": "1"}]
    # The playbooks' form and the alias form name the same thing.
    assert blast_radius(reg, f"model:{ft}/1").to_dict()["versions"] == out["versions"]
    assert lineage(reg, f"models:/{c}@staging").subject.version == "3"


def test_states_are_shown(world: Any, tree: dict[str, str]) -> None:
    reg = world[1]
    mark(reg, tree["ftft"], "1", "quarantined", reason="suspect")
    report = blast_radius(reg, f"dataset:{tree['customers']}@2")
    states = {e.record.name: e.record.state for e in report.downstream}
    assert states[tree["ftft"]] == "quarantined"
    assert report.to_dict()["bad_states"] == [f"{tree['ftft']}/1"]


def test_cycles_are_walked_once(world: Any, tmp_path: Path) -> None:
    reg = world[1]
    a, b = fx.unique("cyc-a"), fx.unique("cyc-b")
    fx.model(reg, a, tmp_path)
    fx.model(reg, b, tmp_path, parents=(f"{a}/1",))
    with reg.store.session() as session:  # a -> b -> a: assay never writes this, a DB can hold it
        child = require_artifact(session, "model", a, "1")
        parent = require_artifact(session, "model", b, "1")
        session.add(Lineage(child_id=child.id, parent_id=parent.id, relation="fine-tuned-from"))
    report = blast_radius(reg, f"models:/{a}/1")
    assert report.to_dict()["versions"] == [f"{a}/1", f"{b}/1"]
    assert [e.record.name for e in report.upstream] == [b]


def test_bad_references(world: Any, tree: dict[str, str]) -> None:
    reg = world[1]
    with pytest.raises(NotFoundError, match="has no version 9"):
        blast_radius(reg, f"dataset:{tree['customers']}@9")
    with pytest.raises(NotFoundError, match="no dataset named"):
        lineage(reg, "dataset:nosuch@1")
    with pytest.raises(AssayError, match="needs a version"):
        blast_radius(reg, f"dataset:{tree['customers']}")
    assert lineage(reg, f"dataset:{tree['customers']}").subject.version == "2"  # newest
    with pytest.raises(NotFoundError, match="no alias 'gone'"):
        lineage(reg, f"models:/{tree['churn']}@gone")
    with pytest.raises(NotFoundError, match="has no version 8"):
        lineage(reg, f"models:/{tree['churn']}/8")
    with pytest.raises(AssayError, match="expected dataset:NAME@V or models:/NAME/V"):
        lineage(reg, "s3://bucket/x")

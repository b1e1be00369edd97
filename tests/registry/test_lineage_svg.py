"""The blast-radius picture: valid XML, every node drawn, affected ones marked, hostile names
escaped, nothing external, bounded size."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from assay.registry.lineage_svg import MAX_NODES, lineage_svg

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "x<script>alert(1)</script>&amp;\"'\x01]]><!--"


def entry(name: str, version: str, depth: int, via: str, kind: str = "model", **kw) -> dict:
    ref = f"dataset:{name}@{version}" if kind == "dataset" else f"models:/{name}/{version}"
    return {
        "kind": kind,
        "ref": ref,
        "name": name,
        "version": version,
        "state": kw.get("state", "known-good"),
        "depth": depth,
        "via": via,
        "aliases": kw.get("aliases", []),
    }


def poisoned(name: str = "churn") -> dict:
    source = "dataset:customers@2"
    return {
        "source": source,
        "kind": "dataset",
        "subject": {
            "kind": "dataset",
            "ref": source,
            "name": "customers",
            "version": "2",
            "state": "quarantined",
            "aliases": [],
        },
        "upstream": [],
        "downstream": [
            entry(name, "3", 1, source, aliases=["production", "canary"]),
            entry("fraud", "2", 2, f"models:/{name}/3", aliases=["production"]),
        ],
        "summary": "2 affected",
    }


def nodes(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)  # parses: well-formed XML
    assert root.tag == f"{SVG}svg"
    return {g.get("data-ref"): g for g in root.iter(f"{SVG}g")}


def test_datasets_versions_and_aliases_with_affected_ones_marked():
    drawn = nodes(lineage_svg(poisoned()))
    assert set(drawn) == {
        "dataset:customers@2",
        "models:/churn/3",
        "models:/fraud/2",
        "alias:churn@production",
        "alias:churn@canary",
        "alias:fraud@production",
    }
    assert all(g.get("data-affected") == "true" for g in drawn.values())
    assert "source" in drawn["dataset:customers@2"].get("class").split()
    labels = ["".join(t.itertext()) for g in drawn.values() for t in g.iter(f"{SVG}text")]
    assert (
        "churn/3" in labels
        and "fraud@production" in labels
        and "quarantined (bad)" in " ".join(labels)
    )


def test_upstream_of_a_model_is_drawn_but_not_affected():
    data = {
        "source": "models:/ft/1",
        "kind": "model",
        "subject": {
            "kind": "model",
            "ref": "models:/ft/1",
            "name": "ft",
            "version": "1",
            "state": "compromised",
            "aliases": ["production"],
        },
        "upstream": [
            entry("base", "4", 1, "models:/ft/1", aliases=["staging"]),
            entry("data", "1", 2, "models:/base/4", kind="dataset"),
        ],
        "downstream": [entry("child", "1", 1, "models:/ft/1")],
    }
    drawn = nodes(lineage_svg(data))
    affected = {ref for ref, g in drawn.items() if g.get("data-affected") == "true"}
    assert affected == {"models:/ft/1", "models:/child/1", "alias:ft@production"}
    assert {"models:/base/4", "dataset:data@1", "alias:base@staging"} <= set(drawn)


def test_hostile_names_are_escaped_and_nothing_is_external():
    data = poisoned(name=HOSTILE)
    svg = lineage_svg(data, title=HOSTILE)
    drawn = nodes(svg)
    assert f"models:/{HOSTILE.replace(chr(1), '')}/3" in drawn  # text survives, minus XML-invalid
    root = ET.fromstring(svg)
    tags = {el.tag.removeprefix(SVG) for el in root.iter()}
    assert tags <= {"svg", "title", "style", "text", "g", "rect", "path"}  # no script, no image
    assert all(not k.endswith("href") for el in root.iter() for k in el.attrib)
    assert "<script" not in svg and "url(" not in svg


def test_big_graphs_are_cut_with_a_note():
    data = poisoned()
    data["downstream"] = [
        entry(f"m{i}", "1", 1, "dataset:customers@2", aliases=["production"]) for i in range(600)
    ]
    svg = lineage_svg(data)
    drawn = nodes(svg)
    assert len(drawn) == MAX_NODES
    assert "more not drawn" in svg


NAMES = st.text(min_size=0, max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(NAMES, NAMES, st.integers(-3, 5), st.lists(NAMES, max_size=2), NAMES),
        max_size=8,
    ),
    NAMES,
)
def test_any_lineage_draws_as_well_formed_svg(rows, title):
    data = poisoned()
    data["downstream"] = [
        {**entry(n, v, d, "dataset:customers@2", aliases=a), "state": s} for n, v, d, a, s in rows
    ]
    nodes(lineage_svg(data, title=title))

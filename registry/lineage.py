"""Lineage queries: what a version was made from, what was made from it, and who serves it.

Edges live in the store's ``lineage`` table: a model version ``trained-on`` a dataset version, a
model version ``fine-tuned-from`` a parent model version. :func:`lineage` walks them both ways
from ``dataset:NAME@V`` or ``models:/NAME/V``; :func:`blast_radius` is the downstream half, the
set the data-poisoning and backdoored-model playbooks act on: every model version trained on the
dataset (or derived from the model), transitively through fine-tuned children, with the MLflow
aliases serving each. Edges are loaded in one query and walked with a visited set, so a cycle
(which assay never writes, but a database can hold) is walked once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assay.core.errors import AssayError, NotFoundError
from assay.core.refs import parse_dataset_ref, parse_model_ref
from assay.registry.status import load_records
from assay.registry.versions import VersionRecord, require_artifact, version_key
from assay.store.models import BAD_STATES, Lineage

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.registry.facade import Registry

__all__ = ["LineageEntry", "LineageReport", "blast_radius", "lineage", "parse_source"]

_BARE_DATASET = re.compile(r"^[^/@:]+@\d+$")


@dataclass
class LineageEntry:
    """One version reached from the source, how, and who serves it."""

    record: VersionRecord
    depth: int  # edges from the source
    relation: str  # trained-on / fine-tuned-from: the edge it was reached through
    via: str  # the ref it was reached from
    aliases: list[str] = field(default_factory=list)

    @property
    def short(self) -> str:
        """``NAME/V`` for models, ``NAME@V`` for datasets (the playbooks' format)."""
        r = self.record
        return f"{r.name}/{r.version}" if r.kind == "model" else f"{r.name}@{r.version}"

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "kind": r.kind,
            "ref": r.ref,
            "name": r.name,
            "version": r.version,
            "state": r.state,
            "status": r.status,
            "reason": r.reason,
            "depth": self.depth,
            "relation": self.relation,
            "via": self.via,
            "aliases": self.aliases,
        }


@dataclass
class LineageReport:
    """Upstream and downstream of one dataset or model version."""

    source: str  # dataset:NAME@V or models:/NAME/V
    kind: str  # dataset or model
    subject: VersionRecord
    subject_aliases: list[str] = field(default_factory=list)
    upstream: list[LineageEntry] = field(default_factory=list)
    downstream: list[LineageEntry] = field(default_factory=list)

    # -- the blast radius ------------------------------------------------------------------

    @property
    def affected(self) -> list[VersionRecord]:
        """Affected model versions: the model itself (model source) and everything downstream."""
        out = [self.subject] if self.kind == "model" else []
        out += [e.record for e in self.downstream if e.record.kind == "model"]
        return sorted(out, key=lambda r: (r.name, version_key(r.version)))

    @property
    def direct(self) -> list[str]:
        if self.kind == "model":
            return [f"{self.subject.name}/{self.subject.version}"]
        return _sorted_refs(e.short for e in self.downstream if e.depth == 1)

    @property
    def descendants(self) -> list[str]:
        if self.kind == "model":
            return _sorted_refs(e.short for e in self.downstream)
        return _sorted_refs(e.short for e in self.downstream if e.depth > 1)

    @property
    def versions(self) -> list[str]:
        return [f"{r.name}/{r.version}" for r in self.affected]

    @property
    def affected_models(self) -> list[str]:
        return sorted({r.name for r in self.affected})

    @property
    def serving(self) -> list[dict[str, str]]:
        """``{model, alias, version}`` for every alias serving an affected version."""
        out = []
        if self.kind == "model":
            for alias in self.subject_aliases:
                out.append(
                    {"model": self.subject.name, "alias": alias, "version": self.subject.version}
                )
        for entry in self.downstream:
            for alias in entry.aliases:
                out.append(
                    {"model": entry.record.name, "alias": alias, "version": entry.record.version}
                )
        return sorted(out, key=lambda d: (d["model"], d["alias"]))

    def summary(self) -> str:
        serving = self.serving
        return (
            f"{self.source}: {len(self.versions)} affected model version(s) of "
            f"{len(self.affected_models)} model(s), {len(serving)} serving alias(es)"
        )

    def to_dict(self) -> dict[str, Any]:
        serving = self.serving
        return {
            "source": self.source,
            "kind": self.kind,
            "subject": {**self.subject.to_dict(), "aliases": self.subject_aliases},
            "upstream": [e.to_dict() for e in self.upstream],
            "downstream": [e.to_dict() for e in self.downstream],
            # The blast radius, in the playbooks' formats (NAME/V, names, {model, alias, version}).
            "versions": self.versions,
            "direct": self.direct,
            "descendants": self.descendants,
            "models": self.affected_models,
            "affected_models": self.affected_models,
            "aliases": serving,
            "serving": serving,
            "bad_states": sorted(
                e.short for e in self.downstream + self.upstream if e.record.state in BAD_STATES
            ),
            "summary": self.summary(),
        }


def _sorted_refs(refs: Any) -> list[str]:
    def key(ref: str) -> tuple[str, int]:
        name, _, version = ref.replace("@", "/").rpartition("/")
        return name, version_key(version)

    return sorted(set(refs), key=key)


# --- parsing ---------------------------------------------------------------------------------


def parse_source(
    registry: Registry, text: str, *, require_version: bool = False
) -> tuple[str, str, str | None]:
    """(kind, name, version) of ``dataset:NAME@V`` or ``models:/NAME/V`` (also ``model:NAME/V``,
    ``NAME/V``, ``models:/NAME@ALIAS``; a bare ``NAME@N`` is a dataset version).

    A dataset version may be left out (the newest) unless ``require_version``; a model alias is
    read from MLflow.
    """
    text = str(text).strip()
    if text.startswith("dataset:") or _BARE_DATASET.match(text):
        ref = parse_dataset_ref(text, require_version=require_version)
        return "dataset", ref.name, ref.version
    if text.startswith("model:"):
        text = "models:/" + text[len("model:") :]
    try:
        model = parse_model_ref(text)
    except AssayError:
        raise AssayError(
            f"not a dataset or model version: {text!r} (expected dataset:NAME@V or models:/NAME/V)"
        ) from None
    if model.version:
        return "model", model.name, model.version
    version = registry.backend.get_alias(model.name, model.alias or "")
    if version is None:
        raise NotFoundError(f"model {model.name!r} has no alias {model.alias!r}")
    return "model", model.name, version


# --- walking ---------------------------------------------------------------------------------


def _edges(
    session: Session,
) -> tuple[dict[int, list[tuple[int, str]]], dict[int, list[tuple[int, str]]]]:
    """(children by parent, parents by child), each as (other id, relation)."""
    children: dict[int, list[tuple[int, str]]] = {}
    parents: dict[int, list[tuple[int, str]]] = {}
    for child, parent, relation in session.execute(
        select(Lineage.child_id, Lineage.parent_id, Lineage.relation)
    ):
        children.setdefault(parent, []).append((child, relation))
        parents.setdefault(child, []).append((parent, relation))
    return children, parents


def _walk(start: int, graph: dict[int, list[tuple[int, str]]]) -> list[tuple[int, int, str, int]]:
    """Breadth-first from ``start``: (id, depth, relation, reached-from id), each id once."""
    seen = {start}
    out: list[tuple[int, int, str, int]] = []
    frontier = [start]
    depth = 0
    while frontier:
        depth += 1
        nxt: list[int] = []
        for node in frontier:
            for other, relation in graph.get(node, []):
                if other in seen:
                    continue
                seen.add(other)
                out.append((other, depth, relation, node))
                nxt.append(other)
        frontier = nxt
    return out


def lineage(registry: Registry, ref: str, *, require_version: bool = False) -> LineageReport:
    """Upstream (datasets, parents) and downstream (trained or fine-tuned from it) of ``ref``."""
    kind, name, version = parse_source(registry, ref, require_version=require_version)
    with registry.store.session(readonly=True) as session:
        artifact = require_artifact(session, kind, name, version)
        children, parents = _edges(session)
        down = _walk(artifact.id, children)
        up = _walk(artifact.id, parents)
        records = load_records(
            session, ids=[artifact.id, *(i for i, *_ in down), *(i for i, *_ in up)]
        )
    subject = records[artifact.id]
    report = LineageReport(source=subject.ref, kind=kind, subject=subject)

    def entries(walked: list[tuple[int, int, str, int]]) -> list[LineageEntry]:
        out = []
        for node, depth, relation, via in walked:
            if node not in records:  # not a model or dataset (e.g. a plain path)
                continue
            out.append(LineageEntry(records[node], depth, relation, records[via].ref))
        return sorted(
            out,
            key=lambda e: (e.depth, e.record.kind, e.record.name, version_key(e.record.version)),
        )

    report.downstream = entries(down)
    report.upstream = entries(up)

    # Aliases from MLflow: one call per model that appears, never one per version.
    models = {
        e.record.name for e in report.downstream + report.upstream if e.record.kind == "model"
    }
    if kind == "model":
        models.add(name)
    by_model = {m: _aliases(registry, m) for m in sorted(models)}
    for entry in report.downstream:
        if entry.record.kind == "model":
            entry.aliases = _serving(by_model.get(entry.record.name, {}), entry.record.version)
    for entry in report.upstream:
        if entry.record.kind == "model":
            entry.aliases = _serving(by_model[entry.record.name], entry.record.version)
    if kind == "model":
        report.subject_aliases = _serving(by_model[name], subject.version)
    return report


def blast_radius(registry: Registry, source: str) -> LineageReport:
    """Every model version trained on dataset ``source`` (``dataset:NAME@V``) or derived from
    model ``source`` (``models:/NAME/V``, ``model:NAME/V``), transitively, with serving aliases.

    The report's ``to_dict`` has ``versions`` / ``direct`` / ``descendants`` (``NAME/V``),
    ``models`` / ``affected_models`` (names) and ``aliases`` / ``serving``
    (``{model, alias, version}``). A dataset version must be given explicitly.
    """
    return lineage(registry, str(source), require_version=True)


def _aliases(registry: Registry, name: str) -> dict[str, str]:
    try:
        return registry.backend.aliases(name)
    except NotFoundError:
        return {}


def _serving(aliases: dict[str, str], version: str) -> list[str]:
    return sorted(a for a, v in aliases.items() if str(v) == str(version))

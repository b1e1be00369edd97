"""Choosing a rollback target: the newest earlier version that is safe to serve.

A candidate must be older than the serving version, ``known-good`` (any state for ``--to`` but
quarantined/compromised), free of tainted lineage (no quarantined or compromised dataset or
parent model, transitively), carry a required label if asked (e.g. ``robust``), not be in the
incident's ``avoid`` list, and verify now (re-read bytes). Everything is loaded in a few bulk
queries so that a model with 1,000 versions plans quickly; only the chosen candidate is re-hashed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assay.registry.states import tainted_lineages
from assay.registry.versions import version_key
from assay.store.models import BAD_STATES, Artifact, ArtifactState

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.registry.facade import Registry


@dataclass
class Candidate:
    """One earlier version and why it can or cannot serve."""

    version: str
    state: str
    eligible: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class RollbackPlan:
    """What a rollback would do."""

    model: str
    alias: str
    current: str | None
    target: str | None
    candidates: list[Candidate] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def refusal(self) -> str:
        """One line saying why no target was found."""
        rejected = "; ".join(f"v{c.version}: {', '.join(c.reasons)}" for c in self.candidates[:6])
        more = f" (+{len(self.candidates) - 6} more)" if len(self.candidates) > 6 else ""
        where = f"{self.model}@{self.alias} (serving version {self.current})"
        return f"no version to roll {where} back to: " + (
            rejected + more if rejected else "no earlier versions"
        )


@dataclass
class _Version:
    artifact_id: int
    version: str
    state: str
    status: str
    labels: list[str]


def load_versions(session: Session, name: str) -> list[_Version]:
    rows = session.execute(
        select(
            Artifact.id,
            Artifact.version,
            ArtifactState.state,
            ArtifactState.status,
            ArtifactState.labels,
        )
        .join(ArtifactState, ArtifactState.artifact_id == Artifact.id, isouter=True)
        .where(Artifact.kind == "model", Artifact.name == name)
    ).all()
    versions = [
        _Version(i, v or "", s or "registered", st or "complete", json.loads(lb or "[]"))
        for i, v, s, st, lb in rows
    ]
    return sorted(versions, key=lambda v: version_key(v.version))


def plan_rollback(
    registry: Registry,
    name: str,
    *,
    alias: str = "production",
    current: str | None,
    to: str | None = None,
    require_label: str | None = None,
    avoid: tuple[str, ...] = (),
    verify: bool = True,
) -> RollbackPlan:
    """Pick the target for rolling ``name@alias`` back from ``current``."""
    from assay.registry.uri_verify import verify_version

    avoid_set = set(avoid)
    plan = RollbackPlan(model=name, alias=alias, current=current, target=None)
    with registry.store.session(readonly=True) as session:
        versions = load_versions(session, name)
        if to is not None:
            pool = [v for v in versions if v.version == str(to)]
            if not pool:
                known = ", ".join(v.version for v in versions) or "none"
                plan.note = f"model {name!r} has no version {to} registered with assay (registered: {known})"
                return plan
        else:
            pool = [
                v
                for v in versions
                if current is None or version_key(v.version) < version_key(current)
            ]
            pool.reverse()  # newest first
        taint = tainted_lineages(session, [v.artifact_id for v in pool])
    for v in pool:
        reasons = []
        if v.status != "complete":
            reasons.append("registration not complete")
        if v.state in BAD_STATES:
            reasons.append(f"state is {v.state}")
        elif to is None and v.state != "known-good":
            reasons.append(f"state is {v.state}, not known-good")
        reasons.extend(f"lineage: {t}" for t in taint.get(v.artifact_id, []))
        if require_label and require_label not in v.labels:
            reasons.append(f"not labelled {require_label}")
        if f"{name}/{v.version}" in avoid_set:
            reasons.append("affected by this incident")
        if v.version == current:
            reasons.append("it is the version serving now")
        if not reasons and verify:
            report = verify_version(registry, name, v.version)
            if not report.ok:
                reasons.append(f"fails verification now ({report.summary().split(': ', 1)[-1]})")
        plan.candidates.append(Candidate(v.version, v.state, not reasons, reasons))
        if not reasons:
            plan.target = v.version
            break
    return plan

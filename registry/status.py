"""`assay status`: what assay's store says, what MLflow says, and where they disagree (drift).

The store is the truth (DESIGN §4). For each model assay knows, MLflow is asked once for its
versions and aliases (two REST calls in server mode, whatever the number of versions); the store
is read in a handful of bulk queries. Drift findings are :class:`DriftFinding` records (``kind``,
a :class:`DriftKind`, ``model``, ``version``, ``detail``):

* ``alias-moved-outside-assay``: an MLflow alias differs from the last move assay recorded for it,
  was set with no recorded move, or was deleted behind assay's back;
* ``unsigned-version``: an MLflow version of a model assay manages with no complete assay record;
* ``pending-registration``: a registration that never completed (store row, or an MLflow version
  tagged ``assay.pending``, also of a model whose first registration was interrupted);
* ``tag-mismatch``: an ``assay.state`` / ``assay.manifest`` tag disagrees with the store;
* ``version-missing``: a version assay recorded is gone from MLflow (or the whole model is);
* ``serving-bad-version``: an alias serves a quarantined or compromised version;
* ``unmanaged``: a registered model in MLflow that assay never registered (one per model);
* with ``deep``: ``bytes-changed``: re-reading the artifact store does not verify.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assay.core.drift import DRIFT_KINDS, DriftKind
from assay.core.errors import AssayError, NotFoundError
from assay.core.tags import MANIFEST_TAG, PENDING_TAG, STATE_TAG
from assay.registry.versions import VersionRecord, display, state_fields, version_key
from assay.store.models import (
    BAD_STATES,
    AliasMove,
    Artifact,
    ArtifactState,
    Freeze,
    Lineage,
    Signature,
)
from assay.store.version_record import record_from_row

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session

    from assay.mlflow_access.base import ModelVersionInfo
    from assay.registry.facade import Registry

__all__ = [
    "DRIFT_KINDS",
    "DriftFinding",
    "DriftKind",
    "ModelStatus",
    "StatusReport",
    "VersionStatus",
    "load_records",
    "status",
]


#: Finding kinds that mean the bytes no longer verify (the CLI exits 3 on them).
INTEGRITY_KINDS = frozenset({DriftKind.BYTES_CHANGED})


@dataclass(frozen=True)
class DriftFinding:
    """One disagreement: its kind, the model and version it concerns, and a one-line detail."""

    kind: DriftKind
    model: str | None
    version: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "model": self.model,
            "version": self.version,
            "detail": self.detail,
        }


@dataclass
class VersionStatus:
    """One model version: the store's record plus what MLflow shows."""

    record: VersionRecord
    aliases: list[str] = field(default_factory=list)
    in_mlflow: bool = True
    verified: bool | None = None  # deep only
    gates: dict[str, str] = field(default_factory=dict)  # gate -> status of its newest result

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.record.to_dict(),
            "aliases": self.aliases,
            "in_mlflow": self.in_mlflow,
            "verified": self.verified,
            "gates": self.gates,
        }


@dataclass
class ModelStatus:
    """One model: its versions, aliases (from MLflow) and freeze."""

    name: str
    versions: list[VersionStatus] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    frozen: dict[str, Any] | None = None
    in_mlflow: bool = True
    #: MLflow versions tagged ``assay.pending`` that the store never recorded (never loadable).
    pending: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "frozen": self.frozen is not None,
            "freeze": self.frozen,
            "aliases": self.aliases,
            "in_mlflow": self.in_mlflow,
            "versions": [v.to_dict() for v in self.versions],
            "pending": self.pending,
        }


@dataclass
class StatusReport:
    """Everything `assay status` shows."""

    models: list[ModelStatus] = field(default_factory=list)
    datasets: list[VersionRecord] = field(default_factory=list)
    drift: list[DriftFinding] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)
    deep: bool = False

    @property
    def ok(self) -> bool:
        return not self.drift

    @property
    def integrity_failures(self) -> list[DriftFinding]:
        return [d for d in self.drift if d.kind in INTEGRITY_KINDS]

    def summary(self) -> str:
        versions = sum(len(m.versions) for m in self.models)
        head = (
            f"{len(self.models)} model(s), {versions} version(s), {len(self.datasets)} dataset "
            "version(s)"
        )
        if not self.drift:
            checked = "; bytes re-verified" if self.deep else ""
            return f"{head}: no drift{checked}"
        counts: dict[str, int] = {}
        for finding in self.drift:
            counts[finding.kind.value] = counts.get(finding.kind.value, 0) + 1
        kinds = ", ".join(f"{n} {k}" for k, n in counts.items())
        return f"{head}: {len(self.drift)} drift finding(s): {kinds}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "deep": self.deep,
            "summary": self.summary(),
            "models": [m.to_dict() for m in self.models],
            "datasets": [d.to_dict() for d in self.datasets],
            "unmanaged": self.unmanaged,
            "drift": [d.to_dict() for d in self.drift],
        }


# --- bulk store reads ------------------------------------------------------------------------


def load_records(
    session: Session,
    *,
    kind: str | None = None,
    name: str | None = None,
    ids: Iterable[int] | None = None,
) -> dict[int, VersionRecord]:
    """Version records by artifact id, in four queries whatever their number.

    The same fields as :func:`assay.registry.versions.record_of`, for many artifacts at once.
    """
    query = select(Artifact, ArtifactState).join(
        ArtifactState, ArtifactState.artifact_id == Artifact.id, isouter=True
    )
    if kind is not None:
        query = query.where(Artifact.kind == kind)
    else:
        query = query.where(Artifact.kind.in_(("model", "dataset")))
    if name is not None:
        query = query.where(Artifact.name == name)
    if ids is not None:
        wanted = list(set(ids))
        if not wanted:
            return {}
        query = query.where(Artifact.id.in_(wanted))
    rows = session.execute(query).all()
    if not rows:
        return {}
    by_id = {a.id: (a, s) for a, s in rows}
    id_list = list(by_id)

    key_ids: dict[int, str] = {}
    for artifact_id, subject, key_id in session.execute(
        select(Signature.artifact_id, Signature.subject, Signature.key_id)
        .where(Signature.artifact_id.in_(id_list))
        .order_by(Signature.id)
    ):
        a = by_id[artifact_id][0]
        if subject.startswith(display(a.kind, a.name, a.version)):
            key_ids[artifact_id] = key_id  # the newest wins

    parents: dict[int, list[tuple[Artifact, str]]] = {}
    edges = session.execute(
        select(Lineage.child_id, Lineage.relation, Artifact)
        .join(Artifact, Artifact.id == Lineage.parent_id)
        .where(Lineage.child_id.in_(id_list))
    ).all()
    for child_id, relation, parent in edges:
        parents.setdefault(child_id, []).append((parent, relation))

    out: dict[int, VersionRecord] = {}
    for artifact_id, (a, s) in by_id.items():
        ups = parents.get(artifact_id, [])
        out[artifact_id] = record_from_row(
            a.kind,
            a.name,
            a.version,
            uri=a.uri,
            manifest_root=a.manifest_root,
            created_at=a.created_at,
            state=state_fields(s),
            key_id=key_ids.get(artifact_id),
            lineage=((p.name, p.version, rel) for p, rel in ups),
        )
    return out


def sort_records(records: Iterable[VersionRecord]) -> list[VersionRecord]:
    return sorted(records, key=lambda r: (r.kind, r.name, version_key(r.version)))


# --- status ----------------------------------------------------------------------------------


def _finding(kind: str, model: str | None, version: str | None, detail: str) -> DriftFinding:
    return DriftFinding(DriftKind(kind), model, version, detail)


_UNMANAGED = "registered in MLflow but never through assay"


def _not_managed(name: str, infos: list[ModelVersionInfo], report: StatusReport) -> None:
    """A model MLflow has and assay's store does not: unmanaged, unless its versions are ones an
    interrupted `assay register` left (tagged ``assay.pending``): those are pending-registration.

    The tag is not trusted for anything but this label: a pending version is never loadable, and
    either finding is drift.
    """
    pending = [mv for mv in infos if PENDING_TAG in mv.tags]
    if not pending:
        report.unmanaged.append(name)
        report.drift.append(_finding("unmanaged", name, None, _UNMANAGED))
        return
    model = ModelStatus(name=name, pending=[mv.version for mv in pending])
    model.aliases = dict(sorted((a, mv.version) for mv in infos for a in mv.aliases))
    report.models.append(model)
    for mv in pending:
        report.drift.append(_pending_finding(name, mv.version))
    others = [mv.version for mv in infos if PENDING_TAG not in mv.tags]
    for version in others:
        report.drift.append(
            _finding(
                "unsigned-version",
                name,
                version,
                "MLflow has this version but assay never signed or recorded it",
            )
        )


def _pending_finding(name: str, version: str) -> DriftFinding:
    return _finding(
        "pending-registration",
        name,
        version,
        "MLflow version left by an interrupted `assay register` (re-run it to finish)",
    )


def status(registry: Registry, name: str | None = None, *, deep: bool = False) -> StatusReport:
    """Versions, states, aliases and drift of one model (``name``) or of everything."""
    backend = registry.backend
    report = StatusReport(deep=deep)
    with registry.store.session(readonly=True) as session:
        records = load_records(session, kind="model", name=name)
        known = sorted({r.name for r in records.values()})
        freezes = {
            f.model_name: {
                "reason": f.reason,
                "incident_id": f.incident_id,
                "actor": f.actor,
                "at": f.at.isoformat(timespec="seconds"),
            }
            for f in session.scalars(select(Freeze))
            if name is None or f.model_name == name
        }
        last_moves: dict[tuple[str, str], AliasMove] = {}
        moves = select(AliasMove).order_by(AliasMove.id)
        if name is not None:
            moves = moves.where(AliasMove.model_name == name)
        for move in session.scalars(moves):
            last_moves[(move.model_name, move.alias)] = move
        if name is None:
            datasets = load_records(session, kind="dataset")
        else:
            used = {d for r in records.values() for d in r.datasets}
            datasets = {
                i: r
                for i, r in load_records(session, kind="dataset").items()
                if f"{r.name}@{r.version}" in used
            }
    report.datasets = sort_records(datasets.values())

    if name is not None and not known:
        # Not assay's: pending or unmanaged if MLflow has it, unknown otherwise.
        try:
            infos = backend.list_versions(name)
        except NotFoundError:
            raise NotFoundError(
                f"no model named {name!r} is registered with assay or in MLflow"
            ) from None
        _not_managed(name, infos, report)
        return report

    by_model: dict[str, list[VersionRecord]] = {}
    for record in sort_records(records.values()):
        by_model.setdefault(record.name, []).append(record)

    for model in known:
        report.models.append(
            _model_status(
                registry,
                model,
                by_model.get(model, []),
                freezes.get(model),
                {a: m for (n, a), m in last_moves.items() if n == model},
                report.drift,
                deep=deep,
            )
        )

    _attach_gates(registry, report)
    if name is None:
        for model in backend.list_models():
            if model in set(known):
                continue
            try:
                infos = backend.list_versions(model)
            except NotFoundError:  # deleted meanwhile
                continue
            _not_managed(model, infos, report)
    return report


def _model_status(
    registry: Registry,
    name: str,
    records: list[VersionRecord],
    freeze: dict[str, Any] | None,
    last_moves: dict[str, AliasMove],
    drift: list[DriftFinding],
    *,
    deep: bool,
) -> ModelStatus:
    model = ModelStatus(name=name, frozen=freeze)
    try:
        infos: list[ModelVersionInfo] = registry.backend.list_versions(name)
    except NotFoundError:
        infos = []
        model.in_mlflow = False
        drift.append(
            _finding(
                "version-missing", name, None, "assay records it, but MLflow has no such model"
            )
        )
    mlflow = {mv.version: mv for mv in infos}
    aliases: dict[str, str] = {}
    for mv in infos:
        for alias in mv.aliases:
            aliases[alias] = mv.version
    model.aliases = dict(sorted(aliases.items()))
    by_version = {r.version: r for r in records}

    for record in records:
        mv = mlflow.get(record.version)
        vs = VersionStatus(record=record, aliases=sorted(mv.aliases) if mv else [])
        vs.in_mlflow = mv is not None
        model.versions.append(vs)
        if record.status != "complete":
            drift.append(
                _finding(
                    "pending-registration",
                    name,
                    record.version,
                    f"registration never completed ({record.status}): re-run `assay register`",
                )
            )
            continue
        if mv is None:
            if model.in_mlflow:
                drift.append(
                    _finding(
                        "version-missing",
                        name,
                        record.version,
                        "assay records it, but MLflow has no such version (deleted?)",
                    )
                )
            continue
        for tag, expected in (
            (STATE_TAG, record.state),
            (MANIFEST_TAG, record.manifest_root or ""),
        ):
            actual = mv.tags.get(tag)
            if actual != expected:
                shown = "missing" if actual is None else repr(actual)
                drift.append(
                    _finding(
                        "tag-mismatch",
                        name,
                        record.version,
                        f"tag {tag} is {shown} in MLflow, store says {expected!r}",
                    )
                )
        if deep:
            vs.verified, detail = _deep_check(registry, name, record.version)
            if not vs.verified:
                drift.append(_finding("bytes-changed", name, record.version, detail))

    for mv in infos:
        if mv.version in by_version:
            continue
        if PENDING_TAG in mv.tags:
            model.pending.append(mv.version)
            drift.append(_pending_finding(name, mv.version))
        else:
            drift.append(
                _finding(
                    "unsigned-version",
                    name,
                    mv.version,
                    "MLflow has this version but assay never signed or recorded it",
                )
            )

    for alias in sorted(set(aliases) | set(last_moves)):
        actual = aliases.get(alias)
        last = last_moves.get(alias)
        expected = last.to_version if last is not None else None
        if actual == expected:
            pass
        elif last is None:
            drift.append(
                _finding(
                    "alias-moved-outside-assay",
                    name,
                    actual,
                    f"alias {alias} -> {actual} was set outside assay (no recorded move)",
                )
            )
        elif actual is None:
            drift.append(
                _finding(
                    "alias-moved-outside-assay",
                    name,
                    expected,
                    f"alias {alias} was deleted outside assay (assay last moved it to "
                    f"{expected} via {last.via})",
                )
            )
        else:
            drift.append(
                _finding(
                    "alias-moved-outside-assay",
                    name,
                    actual,
                    f"alias {alias} -> {actual} in MLflow, but assay last moved it to {expected} "
                    f"(via {last.via}, {last.at.isoformat(timespec='seconds')})",
                )
            )
        served = by_version.get(actual or "")
        if served is not None and served.state in BAD_STATES:
            drift.append(
                _finding(
                    "serving-bad-version",
                    name,
                    actual,
                    f"alias {alias} serves a {served.state} version ({served.reason or 'no reason'})",
                )
            )
    return model


def _attach_gates(registry: Registry, report: StatusReport) -> None:
    """Each version's newest verifying gate results for its bytes (``assay gate run``)."""
    from assay.registry.gate_evidence import gate_summary, has_gate_results
    from assay.registry.versions import find_artifact

    with registry.store.session(readonly=True) as session:
        if not has_gate_results(session):
            return
        for model in report.models:
            for vs in model.versions:
                artifact = find_artifact(session, "model", model.name, vs.record.version)
                if artifact is not None:
                    vs.gates = gate_summary(registry, session, artifact)


def _deep_check(registry: Registry, name: str, version: str) -> tuple[bool, str]:
    from assay.registry.uri_verify import verify_version

    try:
        report = verify_version(registry, name, version)
    except AssayError as exc:
        return False, f"cannot re-read its bytes: {exc}"
    if report.ok:
        return True, "verified"
    return False, " ".join(report.summary().split())

"""Gate results as signed evidence: stored, read back, verified and held against the policy.

Each result is a statement (``urn:assay:gate:v1``) whose subject is the version
(``models:/NAME/V``) and whose digest is the version's manifest root, signed with a key that
holds the policy's ``register`` role, and stored in the ``signatures`` table under
``gate:models:/NAME/V`` (as ``trust/signed_changes.py`` stores ``change:`` statements).
:func:`missing_gates` is what ``assay mark ... known-good`` asks: which of the gates the policy
requires have no verifying, passing result with the policy's parameters *for these bytes*.
It sits in the registry layer (``registry/states.py`` and ``registry/status.py`` use it); the gates
themselves live above, in ``assay.gates``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assay.core.canonical import canonical_json, iso_utc, parse_iso_utc
from assay.core.errors import FormatError, IntegrityError
from assay.store.models import Signature, utcnow
from assay.trust.key_records import signature_time_problem
from assay.trust.statements import open_statement, sign_statement, statement_signed_by

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.registry.facade import Registry
    from assay.store.models import Artifact
    from assay.trust.policy import Policy
    from assay.trust.trust_list import TrustList

__all__ = [
    "GATE_PREFIX",
    "PREDICATE_TYPE",
    "STATUSES",
    "GateResult",
    "gate_results",
    "missing_gates",
    "record_result",
]

PREDICATE_TYPE = "urn:assay:gate:v1"
GATE_PREFIX = "gate:"


STATUSES = ("passed", "failed", "error")


@dataclass
class GateResult:
    """One recorded gate result (what the signed statement says)."""

    gate: str
    status: str  # passed | failed | error
    subject: str
    manifest_root: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    detail: str
    data: str | None = None
    data_root: str | None = None
    at: str | None = None
    key_id: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _predicate(result: GateResult) -> dict[str, Any]:
    return {
        "gate": result.gate,
        "status": result.status,
        "subject": result.subject,
        "manifest_root": result.manifest_root,
        "params": result.params,
        "metrics": result.metrics,
        "detail": result.detail,
        "data": result.data,
        "data_root": result.data_root,
        "at": result.at,
    }


def record_result(
    registry: Registry, session: Session, artifact: Artifact, result: GateResult
) -> None:
    """Sign ``result`` and store it with an audit event, in ``session``'s transaction."""
    if result.manifest_root != artifact.manifest_root:
        raise IntegrityError(
            f"refusing to record gate {result.gate} for {result.subject}: it measured other "
            "bytes than the version's"
        )
    key, _ = registry.keys.signing_key(role=registry.policy(session).role_for("register"))
    now = utcnow()
    result.at, result.key_id = iso_utc(now), key.key_id
    envelope = sign_statement(
        key,
        predicate_type=PREDICATE_TYPE,
        subject=result.subject,
        digest=result.manifest_root,
        predicate=_predicate(result),
    )
    session.add(
        Signature(
            artifact_id=artifact.id,
            subject=GATE_PREFIX + result.subject,
            manifest_root=result.manifest_root,
            key_id=key.key_id,
            bundle=envelope,
            recorded_at=now,
        )
    )
    registry.record(
        session,
        "gate.result",
        result.subject,
        {"gate": result.gate, "status": result.status, "manifest_root": result.manifest_root},
    )


def _verified(
    text: str, recorded_at: datetime, trust: TrustList, policy: Policy
) -> GateResult | None:
    try:
        statement = open_statement(text, PREDICATE_TYPE, what="gate result")
        p = statement.predicate
        result = GateResult(
            gate=str(p["gate"]),
            status=str(p["status"]),
            subject=str(p["subject"]),
            manifest_root=str(p["manifest_root"]),
            params=dict(p["params"]),
            metrics=dict(p["metrics"]),
            detail=str(p["detail"]),
            data=p.get("data"),
            data_root=p.get("data_root"),
            at=str(p["at"]),
        )
        parse_iso_utc(result.at)
    except (IntegrityError, FormatError, KeyError, TypeError, ValueError):
        return None
    if (
        result.status not in STATUSES
        or result.subject != statement.subject
        or result.manifest_root != statement.digest
    ):
        return None
    role = policy.role_for("register")
    for key_id in statement.key_ids:
        entry = trust.get(key_id)
        if entry is None or not entry.has_role(role):
            continue
        if signature_time_problem(entry.record(), recorded_at):
            continue
        if statement_signed_by(statement, entry.public_key):
            result.key_id = key_id
            return result
    return None


def gate_results(
    registry: Registry, session: Session, artifact: Artifact, *, policy: Policy | None = None
) -> tuple[list[GateResult], int]:
    """(verifying results for the artifact's current bytes, oldest first; how many stored
    results were left out: unsigned, untrusted, tampered or over other bytes)."""
    from assay.store.version_record import display

    policy = policy or registry.policy(session)
    trust = registry.keys.trust_list(session)
    subject = display(artifact.kind, artifact.name, artifact.version)
    rows = session.execute(
        select(Signature.bundle, Signature.recorded_at)
        .where(Signature.artifact_id == artifact.id, Signature.subject == GATE_PREFIX + subject)
        .order_by(Signature.id)
    ).all()
    good: list[GateResult] = []
    for bundle, recorded_at in rows:
        result = _verified(bundle, recorded_at, trust, policy)
        if (
            result is not None
            and result.subject == subject
            and result.manifest_root == artifact.manifest_root
        ):
            good.append(result)
    return good, len(rows) - len(good)


def latest_by_gate(results: list[GateResult]) -> dict[str, GateResult]:
    """The newest result of each gate."""
    out: dict[str, GateResult] = {}
    for result in results:
        out[result.gate] = result
    return out


def missing_gates(registry: Registry, session: Session, artifact: Artifact) -> list[str]:
    """The gates the policy requires of this model with no passing result for these bytes
    under the policy's parameters, each as ``gate (why)``; empty when known-good may go on."""
    policy = registry.policy(session)
    required = policy.gates.for_model(artifact.name)
    if not required:
        return []
    results, ignored = gate_results(registry, session, artifact, policy=policy)
    missing = []
    for gate, params in sorted(required.items()):
        mine = [r for r in results if r.gate == gate]
        passing = [r for r in mine if r.passed and _same_params(r.params, params)]
        if passing:
            continue
        if not mine:
            why = "no result for these bytes" + (
                f"; {ignored} stored result(s) do not verify or are for other bytes"
                if ignored
                else ""
            )
        elif not any(_same_params(r.params, params) for r in mine):
            why = "no result with the policy's parameters"
        else:
            why = f"last result {mine[-1].status}"
        missing.append(f"{gate} ({why})")
    return missing


def _same_params(used: dict[str, Any], required: dict[str, Any]) -> bool:
    """Whether a result ran with every parameter the policy sets, at the policy's value."""
    return all(
        k in used and canonical_json(used[k]) == canonical_json(v) for k, v in required.items()
    )


def gate_summary(registry: Registry, session: Session, artifact: Artifact) -> dict[str, str]:
    """Gate name -> status of its newest verifying result for the artifact's bytes."""
    results, _ = gate_results(registry, session, artifact)
    return {gate: r.status for gate, r in sorted(latest_by_gate(results).items())}


def has_gate_results(session: Session) -> bool:
    """Whether the store holds any gate result (status skips the work otherwise)."""
    return (
        session.scalar(
            select(Signature.id).where(Signature.subject.startswith(GATE_PREFIX)).limit(1)
        )
        is not None
    )


#: metrics worth a column in an incident report (the rest stay in the signed statement)
KEY_METRICS = (
    "flagged_classes",
    "issue_rate",
    "clean_accuracy",
    "fgsm_accuracy",
    "pgd_accuracy",
    "attack_auc",
    "refused",
    "rows",
)


def report_rows(registry: Registry, versions: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """For each model version (name, version): the newest verifying result of each gate for
    its current bytes (gate, status, key numbers, signer, when); versions assay does not hold
    are left out."""
    from assay.core.errors import NotFoundError
    from assay.registry.versions import require_artifact

    rows: list[dict[str, Any]] = []
    with registry.store.session(readonly=True) as session:
        for name, version in versions:
            try:
                artifact = require_artifact(session, "model", name, version)
            except NotFoundError:
                continue
            results, ignored = gate_results(registry, session, artifact)
            for result in latest_by_gate(results).values():
                rows.append(
                    {
                        "version": f"models:/{name}/{version}",
                        "gate": result.gate,
                        "status": result.status,
                        "metrics": {
                            k: result.metrics[k] for k in KEY_METRICS if k in result.metrics
                        },
                        "detail": result.detail,
                        "key_id": result.key_id,
                        "at": result.at,
                    }
                )
            if ignored:
                rows.append(
                    {
                        "version": f"models:/{name}/{version}",
                        "gate": "(unverified)",
                        "status": "error",
                        "metrics": {},
                        "detail": f"{ignored} stored result(s) do not verify for these bytes",
                        "key_id": None,
                        "at": None,
                    }
                )
    return rows

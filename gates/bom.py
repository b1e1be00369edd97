"""``assay bom``: a CycloneDX 1.6 ML-BOM and a signed in-toto / SLSA provenance statement.

The BOM is built with ``cyclonedx-python-lib``: the model version is the ``machine-learning-model``
metadata component (its manifest root as a SHA-256 hash, state, signer, signatures, watermark
record fingerprint and gate results as ``assay:*`` properties), its trained-on datasets are
``data`` components and its parent models ``machine-learning-model`` components, both as
dependencies. The library does not model CycloneDX's ``modelCard`` yet, so the model card
(datasets by reference, gate metrics as performance metrics, failed gates as technical
limitations) is added to the serialised JSON, and the whole document is then checked with the
library's strict 1.6 JSON-schema validator (``FormatError`` if it does not validate).

The provenance is an in-toto Statement v1 with an SLSA Provenance v1 predicate over the
version's manifest root (build type ``urn:assay:registration:v1``, the datasets and parents as
resolved dependencies), in a DSSE envelope signed by a key holding the policy's ``register`` role.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assay.core.errors import FormatError

if TYPE_CHECKING:
    from assay.registry.facade import Registry

__all__ = ["BomResult", "SLSA_PROVENANCE", "build_bom"]

SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:assay:registration:v1"
BUILDER_ID = "urn:assay:registry"


@dataclass
class BomResult:
    bom: dict[str, Any]
    provenance: str  # DSSE envelope (JSON text)

    def to_dict(self) -> dict[str, Any]:
        return {"bom": self.bom, "provenance": json.loads(self.provenance)}


def _facts(registry: Registry, name: str, version: str) -> dict[str, Any]:
    from sqlalchemy import select

    from assay.registry.gate_evidence import gate_results, latest_by_gate
    from assay.registry.versions import find_artifact, record_of, require_artifact
    from assay.store.models import Signature, WatermarkRow

    with registry.store.session(readonly=True) as session:
        artifact = require_artifact(session, "model", name, version)
        record = record_of(session, artifact)
        signatures = session.execute(
            select(Signature.subject, Signature.key_id).where(Signature.artifact_id == artifact.id)
        ).all()
        watermark = session.get(WatermarkRow, artifact.id)
        results, _ = gate_results(registry, session, artifact)

        def root_of(kind: str, ref: str, sep: str) -> str | None:
            n, _, v = ref.partition(sep)
            found = find_artifact(session, kind, n, v)
            return found.manifest_root if found is not None else None

        datasets = [(d, root_of("dataset", d, "@")) for d in record.datasets]
        parents = [(p, root_of("model", p, "/")) for p in record.parents]
    return {
        "record": record,
        "signatures": sorted({(s, k) for s, k in signatures}),
        "watermark": watermark.secret_fingerprint if watermark is not None else None,
        "gates": latest_by_gate(results),
        "datasets": datasets,
        "parents": parents,
    }


def _cyclonedx(subject: str, facts: dict[str, Any]) -> dict[str, Any]:
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    record = facts["record"]
    props = [
        Property(name="assay:manifest_root", value=record.manifest_root or ""),
        Property(name="assay:state", value=record.state),
        Property(name="assay:signer", value=record.key_id or ""),
    ]
    props += [Property(name="assay:signature", value=f"{s} {k}") for s, k in facts["signatures"]]
    if facts["watermark"]:
        props.append(Property(name="assay:watermark_fingerprint", value=facts["watermark"]))
    for gate, result in sorted(facts["gates"].items()):
        props.append(Property(name=f"assay:gate:{gate}", value=f"{result.status}: {result.detail}"))

    def digest(root: str | None) -> list[Any]:
        return [HashType(alg=HashAlgorithm.SHA_256, content=root)] if root else []

    model = Component(
        name=record.name,
        version=record.version,
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=subject,
        hashes=digest(record.manifest_root),
        properties=props,
    )
    bom = Bom()
    bom.metadata.component = model
    deps = []
    upstream = [(ref, root, "@", ComponentType.DATA, "dataset:") for ref, root in facts["datasets"]]
    upstream += [
        (ref, root, "/", ComponentType.MACHINE_LEARNING_MODEL, "models:/")
        for ref, root in facts["parents"]
    ]
    for ref, root, sep, kind, prefix in upstream:
        n, _, v = ref.partition(sep)
        c = Component(name=n, version=v, type=kind, bom_ref=prefix + ref, hashes=digest(root))
        bom.components.add(c)
        deps.append(c)
    bom.register_dependency(model, deps)
    doc = json.loads(JsonV1Dot6(bom).output_as_string())
    doc["metadata"]["component"]["modelCard"] = _model_card(facts)
    return doc


def _model_card(facts: dict[str, Any]) -> dict[str, Any]:
    metrics = []
    limitations = []
    for gate, result in sorted(facts["gates"].items()):
        for key, value in sorted(result.metrics.items()):
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics.append({"type": f"{gate}:{key}", "value": str(value)})
        if not result.passed:
            limitations.append(f"gate {gate} {result.status}: {result.detail}")
    card: dict[str, Any] = {
        "modelParameters": {"datasets": [{"ref": f"dataset:{d}"} for d, _ in facts["datasets"]]},
        "quantitativeAnalysis": {"performanceMetrics": metrics},
        "properties": [
            {"name": f"assay:gate:{g}", "value": r.status}
            for g, r in sorted(facts["gates"].items())
        ],
    }
    if limitations:
        card["considerations"] = {"technicalLimitations": limitations}
    return card


def validate_cyclonedx(doc: dict[str, Any]) -> None:
    """``FormatError`` unless ``doc`` validates against the CycloneDX 1.6 JSON schema."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc))
    if error is not None:
        raise FormatError(f"the ML-BOM does not validate against CycloneDX 1.6: {str(error)[:200]}")


def _provenance(registry: Registry, subject: str, facts: dict[str, Any]) -> str:
    from assay.core.canonical import iso_utc
    from assay.trust.statements import sign_statement

    record = facts["record"]
    deps = [
        {"uri": f"dataset:{d}", "digest": {"sha256": root}} for d, root in facts["datasets"] if root
    ] + [
        {"uri": f"models:/{p}", "digest": {"sha256": root}} for p, root in facts["parents"] if root
    ]
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"model": record.name, "version": record.version},
            "internalParameters": {"source": record.source, "run_id": record.run_id},
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {"id": BUILDER_ID},
            "metadata": {
                "invocationId": record.run_id or subject,
                "startedOn": iso_utc(record.created_at) if record.created_at else None,
            },
        },
    }
    if predicate["runDetails"]["metadata"]["startedOn"] is None:
        del predicate["runDetails"]["metadata"]["startedOn"]
    key, _ = registry.keys.signing_key(role=registry.policy().role_for("register"))
    return sign_statement(
        key,
        predicate_type=SLSA_PROVENANCE,
        subject=subject,
        digest=record.manifest_root,
        predicate=predicate,
    )


def build_bom(registry: Registry, uri: str) -> BomResult:
    """The ML-BOM (validated) and the signed provenance of ``models:/NAME/V``."""
    from assay.registry.uri_verify import resolve_model_version
    from assay.registry.versions import display

    name, version = resolve_model_version(registry, uri)
    subject = display("model", name, version)
    facts = _facts(registry, name, version)
    if not facts["record"].manifest_root:
        raise FormatError(f"{subject} has no recorded bytes (registration never completed)")
    doc = _cyclonedx(subject, facts)
    validate_cyclonedx(doc)
    return BomResult(doc, _provenance(registry, subject, facts))

"""Gate results as signed evidence in the store, on SQLite and PostgreSQL: recorded, verified,
bound to the version's bytes and subject, and held against the policy's gates: section."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from trust_helpers import bootstrap_admin

from assay.core.errors import IntegrityError
from assay.registry.facade import Registry
from assay.registry.gate_evidence import (
    GATE_PREFIX,
    GateResult,
    gate_results,
    missing_gates,
    record_result,
)
from assay.store.models import Artifact, ArtifactState, Signature, utcnow
from assay.trust.policy import parse_policy_text
from assay.trust.policy_service import set_policy


@pytest.fixture
def registry(settings, store):
    reg = Registry(settings, store)
    bootstrap_admin(reg)
    return reg


def _version(registry, name: str, version: str, root: str) -> None:
    with registry.store.session() as session:
        artifact = Artifact(
            kind="model",
            name=name,
            version=version,
            uri="/nowhere",
            manifest_root=root,
            created_at=utcnow(),
        )
        session.add(artifact)
        session.flush()
        session.add(
            ArtifactState(
                artifact_id=artifact.id,
                state="registered",
                status="complete",
                labels="[]",
                updated_at=utcnow(),
            )
        )


def _artifact(session, name, version):
    return session.scalar(
        select(Artifact).where(Artifact.name == name, Artifact.version == version)
    )


def _result(name, version, root, status="passed", params=None):
    return GateResult(
        "robustness",
        status,
        f"models:/{name}/{version}",
        root,
        params or {"eps": 0.1},
        {"pgd_accuracy": 0.8},
        "ok",
    )


def test_record_verify_and_require(registry):
    _version(registry, "m", "1", "a" * 64)
    _version(registry, "m", "2", "b" * 64)
    set_policy(registry, parse_policy_text("gates:\n  m: {robustness: {eps: 0.1}}\n"))
    with registry.store.session() as session:
        a1 = _artifact(session, "m", "1")
        assert missing_gates(registry, session, a1) == ["robustness (no result for these bytes)"]
        record_result(registry, session, a1, _result("m", "1", "a" * 64, params={"eps": 0.2}))
    with registry.store.session() as session:
        a1 = _artifact(session, "m", "1")
        assert missing_gates(registry, session, a1) == [
            "robustness (no result with the policy's parameters)"
        ]
        record_result(registry, session, a1, _result("m", "1", "a" * 64, status="failed"))
    with registry.store.session() as session:
        a1 = _artifact(session, "m", "1")
        assert missing_gates(registry, session, a1) == ["robustness (last result failed)"]
        record_result(registry, session, a1, _result("m", "1", "a" * 64))
    with registry.store.session() as session:
        a1 = _artifact(session, "m", "1")
        assert missing_gates(registry, session, a1) == []
        results, ignored = gate_results(registry, session, a1)
        assert [r.status for r in results] == ["passed", "failed", "passed"] and ignored == 0
        with pytest.raises(IntegrityError, match="other bytes"):
            record_result(registry, session, a1, _result("m", "1", "b" * 64))


def test_copied_edited_or_misfiled_results_do_not_count(registry):
    _version(registry, "m", "1", "a" * 64)
    _version(registry, "m", "2", "a" * 64)  # same bytes, other version
    set_policy(registry, parse_policy_text("gates:\n  m: [robustness]\n"))
    with registry.store.session() as session:
        record_result(registry, session, _artifact(session, "m", "1"), _result("m", "1", "a" * 64))
    with registry.store.session() as session:
        row = session.scalar(
            select(Signature).where(Signature.subject == GATE_PREFIX + "models:/m/1")
        )
        a2 = _artifact(session, "m", "2")
        session.add(
            Signature(
                artifact_id=a2.id,
                subject=GATE_PREFIX + "models:/m/2",
                manifest_root="a" * 64,
                key_id=row.key_id,
                bundle=row.bundle,
                recorded_at=row.recorded_at,
            )
        )
        # and an edited copy of version 1's own result: its signature no longer verifies
        edited = row.bundle.replace(row.bundle[40:44], "AAAA")
        session.add(
            Signature(
                artifact_id=row.artifact_id,
                subject=row.subject,
                manifest_root=row.manifest_root,
                key_id=row.key_id,
                bundle=edited,
                recorded_at=row.recorded_at,
            )
        )
    with registry.store.session() as session:
        a2 = _artifact(session, "m", "2")
        assert missing_gates(registry, session, a2) == [
            "robustness (no result for these bytes; 1 stored result(s) do not verify or are "
            "for other bytes)"
        ]
        results, ignored = gate_results(registry, session, _artifact(session, "m", "1"))
        assert len(results) == 1 and ignored == 1

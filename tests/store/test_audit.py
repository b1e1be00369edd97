"""The audit log: appends, proofs, checkpoints, tampering, concurrent appenders."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, select, update

from assay.core.canonical import canonical_json
from assay.core.errors import FormatError, IntegrityError
from assay.core.settings import Settings
from assay.store.audit import AuditLog, AuditReport, CheckpointFile
from assay.store.merkle import hash_leaf, verify_consistency, verify_inclusion
from assay.store.models import AuditEvent, AuditHead, Checkpoint, Key, leaf_data
from assay.store.store import Store


class EcSigner:
    """An ECDSA P-256 signer following the keys protocol (key_id, sign)."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = hashlib.sha256(der).hexdigest()

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))


def make_verifier(*signers: EcSigner):
    public = {s.key_id: s.private_key.public_key() for s in signers}

    def verify(key_id: str, signature: bytes, data: bytes) -> bool:
        key = public.get(key_id)
        if key is None:
            return False
        try:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    return verify


@pytest.fixture
def audit(store: Store) -> AuditLog:
    return AuditLog(store)


@pytest.fixture
def signer() -> EcSigner:
    return EcSigner()


def append_many(audit: AuditLog, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        with audit.store.session() as session:
            audit.append(
                session,
                actor="ci@example",
                action="model.register",
                subject=f"churn@{i}",
                payload={"version": i, "digest": f"{i:064x}", "note": "ünïcode"},
            )


def checkpoint_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("checkpoint-*.json"))


# -- canonical JSON -------------------------------------------------------------------------


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "é"], "c": {"y": 1.5, "x": 0}}) == (
        '{"a":[true,null,"é"],"b":1,"c":{"x":0,"y":1.5}}'.encode()
    )
    for bad in (float("nan"), float("inf"), {"t": __import__("datetime").datetime.now()}, {1: 2}):
        with pytest.raises(FormatError):
            canonical_json(bad)
    with pytest.raises(FormatError):
        canonical_json({"x": b"bytes"})


# -- appends, reading, proofs ---------------------------------------------------------------


def test_append_assigns_seq_and_leaf_hash(audit: AuditLog) -> None:
    append_many(audit, 5)
    events = audit.events()
    assert [e.seq for e in events] == [0, 1, 2, 3, 4]
    assert audit.tree_size() == 5
    for event in events:
        assert event.ts.tzinfo is not None
        assert event.payload == canonical_json(event.payload_dict).decode()
        expected = leaf_data(
            seq=event.seq,
            ts=event.ts,
            actor=event.actor,
            action=event.action,
            subject=event.subject,
            payload=event.payload_dict,
        )
        assert json.loads(expected)["seq"] == event.seq
        assert hash_leaf(expected).hex() == event.leaf_hash
    assert [e.seq for e in audit.events(1, 3)] == [1, 2]


def test_append_rolls_back_with_the_callers_transaction(audit: AuditLog) -> None:
    append_many(audit, 2)
    with pytest.raises(RuntimeError), audit.store.session() as session:
        session.add(Key(key_id="k" * 64, name="k", key_type="x", public_pem="p"))
        audit.append(session, actor="a", action="key.add", subject="k", payload={})
        raise RuntimeError("the state change failed")
    assert audit.tree_size() == 2
    append_many(audit, 1, start=2)
    assert [e.seq for e in audit.events()] == [0, 1, 2]
    with audit.store.session() as session:
        assert session.scalars(select(Key)).all() == []


def test_append_rejects_bad_payloads(audit: AuditLog) -> None:
    with pytest.raises(FormatError), audit.store.session() as session:
        audit.append(session, actor="a", action="x", subject="s", payload={"v": float("nan")})
    with pytest.raises(FormatError), audit.store.session() as session:
        audit.append(session, actor="", action="x", subject="s", payload={})
    assert audit.tree_size() == 0


def test_proofs_from_the_log(audit: AuditLog) -> None:
    append_many(audit, 13)
    root = audit.root()
    for seq in range(13):
        proof = audit.inclusion_proof(seq)
        verify_inclusion(seq, 13, audit.leaf_hash(seq), proof, root)
    for old in range(1, 13):
        verify_consistency(old, 13, audit.consistency_proof(old), audit.root(old), root)
    verify_inclusion(3, 7, audit.leaf_hash(3), audit.inclusion_proof(3, 7), audit.root(7))


# -- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_file_and_row(audit: AuditLog, signer: EcSigner, tmp_path: Path) -> None:
    append_many(audit, 3)
    cp = audit.checkpoint(signer, tmp_path / "cps")
    assert cp.path is not None and cp.path.parent == tmp_path / "cps"
    assert cp.path.name.startswith("checkpoint-0000000003-")
    loaded = CheckpointFile.load(cp.path)
    assert loaded.tree_size == 3 and loaded.root_hash == audit.root()
    assert loaded.body() == f"assay\n3\n{json.loads(cp.path.read_text())['root_hash']}\n".encode()
    assert make_verifier(signer)(loaded.key_id, loaded.signature, loaded.body())
    assert [c.tree_size for c in audit.recorded_checkpoints()] == [3]
    # a second checkpoint at the same size gets its own file
    second = audit.checkpoint(signer, tmp_path / "cps")
    assert second.path != cp.path
    assert len(checkpoint_files(tmp_path / "cps")) == 2
    assert not list((tmp_path / "cps").glob(".tmp-*"))


def test_checkpoint_of_empty_log(audit: AuditLog, signer: EcSigner, tmp_path: Path) -> None:
    cp = audit.checkpoint(signer, tmp_path)
    assert cp.tree_size == 0
    append_many(audit, 2)
    audit.checkpoint(signer, tmp_path)
    report = audit.verify(checkpoint_files(tmp_path), make_verifier(signer))
    assert report.ok, report.problems


def test_clean_log_verifies(audit: AuditLog, signer: EcSigner, tmp_path: Path) -> None:
    for batch in (1, 4, 7, 3):
        append_many(audit, batch, start=audit.tree_size())
        audit.checkpoint(signer, tmp_path)
    append_many(audit, 2, start=audit.tree_size())  # events after the last checkpoint
    report = audit.verify(checkpoint_files(tmp_path), make_verifier(signer))
    assert report == AuditReport(
        ok=True, tree_size=17, problems=[], checked_checkpoints=4, checkpoints=report.checkpoints
    )
    assert len(report.checkpoints) == 4
    assert report.to_dict()["checked_checkpoints"] == 4
    report.raise_for_failure()


def test_no_checkpoints_warns(audit: AuditLog) -> None:
    append_many(audit, 3)
    report = audit.verify([], make_verifier(), include_recorded=False)
    assert report.ok and report.warnings


def test_checkpoint_files_missing_from_the_table_are_accepted(
    audit: AuditLog, signer: EcSigner, tmp_path: Path
) -> None:
    append_many(audit, 4)
    audit.checkpoint(signer, tmp_path)
    with audit.store.session() as session:
        session.execute(delete(Checkpoint))
    report = audit.verify(checkpoint_files(tmp_path), make_verifier(signer))
    assert report.ok, report.problems
    assert report.checked_checkpoints == 1


def test_recorded_checkpoints_are_checked_too(
    audit: AuditLog, signer: EcSigner, tmp_path: Path
) -> None:
    append_many(audit, 4)
    audit.checkpoint(signer, tmp_path)
    with audit.store.session() as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 0).values(subject="evil"))
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.seq == 0)
            .values(leaf_hash=_rehash(session, 0).hex())
        )
    report = audit.verify([], make_verifier(signer))
    assert not report.ok
    assert "rewritten" in report.problems[0]


# -- tampering ------------------------------------------------------------------------------


@pytest.fixture
def checkpointed(audit: AuditLog, signer: EcSigner, tmp_path: Path) -> list[Path]:
    """Ten events checkpointed at 6 and 10, then two more."""
    append_many(audit, 6)
    audit.checkpoint(signer, tmp_path)
    append_many(audit, 4, start=6)
    audit.checkpoint(signer, tmp_path)
    append_many(audit, 2, start=10)
    paths = checkpoint_files(tmp_path)
    assert audit.verify(paths, make_verifier(signer)).ok
    return paths


def _rehash(session, seq: int) -> bytes:
    event = session.get(AuditEvent, seq)
    session.refresh(event)
    return hash_leaf(event.leaf_data())


def _verify(audit: AuditLog, paths: list[Path], signer: EcSigner) -> AuditReport:
    # Only the files outside the database are trusted here (an attacker controls the tables).
    report = audit.verify(paths, make_verifier(signer), include_recorded=False)
    assert not report.ok
    with pytest.raises(IntegrityError, match="audit log does not verify"):
        report.raise_for_failure()
    return report


def test_edited_row_is_reported(
    audit: AuditLog, checkpointed: list[Path], signer: EcSigner
) -> None:
    with audit.store.session() as session:
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.seq == 3)
            .values(payload=canonical_json({"version": 99}).decode())
        )
    report = _verify(audit, checkpointed, signer)
    assert any("audit event 3 was modified" in p for p in report.problems)


def test_deleted_middle_row_is_reported(
    audit: AuditLog, checkpointed: list[Path], signer: EcSigner
) -> None:
    with audit.store.session() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq == 4))
    report = _verify(audit, checkpointed, signer)
    assert any("audit event 4 is missing" in p for p in report.problems)


def test_truncated_tail_is_reported(
    audit: AuditLog, checkpointed: list[Path], signer: EcSigner
) -> None:
    with audit.store.session() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq >= 8))
        session.execute(update(AuditHead).values(tree_size=8))  # a careful attacker
    report = _verify(audit, checkpointed, signer)
    assert any("truncated" in p for p in report.problems)
    assert not any("modified" in p or "missing" in p for p in report.problems)


def test_fully_rehashed_rewrite_is_reported(
    audit: AuditLog, checkpointed: list[Path], signer: EcSigner
) -> None:
    # The attacker removes event 2, renumbers the rest and recomputes every leaf hash.
    with audit.store.session() as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
        kept = [
            {
                "ts": e.ts,
                "actor": e.actor,
                "action": e.action,
                "subject": e.subject,
                "payload": e.payload,
            }
            for e in events
            if e.seq != 2
        ]
        session.execute(delete(AuditEvent))
        session.flush()
        for seq, values in enumerate(kept):
            data = leaf_data(seq=seq, **{**values, "payload": json.loads(values["payload"])})
            session.add(AuditEvent(seq=seq, **values, leaf_hash=hash_leaf(data).hex()))
        session.execute(update(AuditHead).values(tree_size=len(kept)))
    internal = audit.verify([], make_verifier(signer), include_recorded=False)
    assert internal.ok  # internally consistent: only the signed checkpoints reveal it
    report = _verify(audit, checkpointed, signer)
    assert any("rewritten" in p for p in report.problems)
    # A rewritten log can still be checkpointed, but it does not match the old checkpoints.
    new_cp = audit.checkpoint(signer, checkpointed[0].parent)
    assert new_cp.path is not None
    report = _verify(audit, [*checkpointed, new_cp.path], signer)
    assert any("not consistent" in p for p in report.problems)


def test_forged_or_corrupt_checkpoints_are_reported(
    audit: AuditLog, checkpointed: list[Path], signer: EcSigner, tmp_path: Path
) -> None:
    doc = json.loads(checkpointed[1].read_text())
    doc["tree_size"] = 11  # not what was signed
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    other = EcSigner()
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    report = audit.verify(
        [forged, junk, *checkpointed], make_verifier(signer), include_recorded=False
    )
    assert any("forged.json: signature does not verify" in p for p in report.problems)
    assert any("junk.json" in p and "not JSON" in p for p in report.problems)
    report = audit.verify(checkpointed, make_verifier(other), include_recorded=False)
    assert sum("signature does not verify" in p for p in report.problems) == 2


def test_checkpoint_refuses_to_sign_a_tampered_log(
    audit: AuditLog, checkpointed: list[Path], signer: EcSigner, tmp_path: Path
) -> None:
    with audit.store.session() as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 1).values(actor="mallory"))
    with pytest.raises(IntegrityError, match="audit event 1"):
        audit.checkpoint(signer, tmp_path / "new")
    assert not (tmp_path / "new").exists()


# -- concurrency ----------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import os, sys, time
    from assay.store.audit import AuditLog
    from assay.store.store import Store

    url, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = Store(url)
    audit = AuditLog(store)
    with store.session(readonly=True):
        pass  # connect before the start signal
    while not os.path.exists(go):
        time.sleep(0.005)
    for i in range(count):
        with store.session() as session:
            audit.append(session, actor=name, action="test.append", subject=name,
                         payload={"i": i})
    store.dispose()
    """
)


@pytest.mark.slow
def test_concurrent_appenders(
    audit: AuditLog, settings: Settings, signer: EcSigner, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, settings.db_url, f"worker{w}", "50", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    go.touch()
    for proc in workers:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    events = audit.events()
    assert [e.seq for e in events] == list(range(200))
    for w in range(4):
        mine = [e.payload_dict["i"] for e in events if e.actor == f"worker{w}"]
        assert mine == list(range(50))
    switches = sum(a.actor != b.actor for a, b in zip(events, events[1:], strict=False))
    print(f"{switches} switches between appenders")  # > 3 means they really interleaved
    audit.checkpoint(signer, tmp_path)
    report = audit.verify(checkpoint_files(tmp_path), make_verifier(signer))
    assert report.ok and report.tree_size == 200, report.problems

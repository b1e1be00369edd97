"""States, promotion, alias moves and freezes against a real embedded MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import registry_fixtures as fx  # noqa: E402
from sqlalchemy import select

from assay.core.errors import AssayError, IntegrityError, NotFoundError, RefusedError
from assay.registry import states
from assay.registry.states import (
    alias_history,
    freeze,
    is_frozen,
    mark,
    move_alias,
    promote,
    state_history,
    unfreeze,
)
from assay.registry.versions import require_artifact, set_state
from assay.store.models import AliasMove, AuditEvent

world = fx.home_fixture()
pytestmark = pytest.mark.slow


@pytest.fixture
def reg(world: tuple[Path, Any]) -> Any:
    return world[1]


def events(reg: Any, subject_prefix: str, action: str | None = None) -> list[AuditEvent]:
    with reg.store.session(readonly=True) as session:
        rows = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.subject.startswith(subject_prefix))
            .order_by(AuditEvent.seq)
        )
        return [e for e in rows if action is None or e.action == action]


def moves(reg: Any, name: str) -> list[AliasMove]:
    with reg.store.session(readonly=True) as session:
        return list(
            session.scalars(
                select(AliasMove).where(AliasMove.model_name == name).order_by(AliasMove.id)
            )
        )


# --- mark --------------------------------------------------------------------------------------


def test_mark_known_good_verifies_real_bytes_and_keeps_history(reg: Any, tmp_path: Path) -> None:
    name = fx.unique("churn")
    fx.model(reg, name, tmp_path)
    record = mark(reg, name, "1", "known-good", reason="CI passed")
    assert (record.state, record.reason) == ("known-good", "CI passed")
    assert reg.backend.get_version(name, "1").tags["assay.state"] == "known-good"

    mark(reg, name, "1", "quarantined", reason="odd outputs", incident_id="inc-1")
    mark(reg, name, "1", "quarantined", reason="again")  # no change, no history entry
    mark(reg, name, "1", "compromised", reason="confirmed", incident_id="inc-1")
    history = state_history(reg, name, "1")
    assert [(h["from"], h["to"]) for h in history] == [
        ("registered", "known-good"),
        ("known-good", "quarantined"),
        ("quarantined", "compromised"),
    ]
    assert history[1]["incident_id"] == "inc-1" and history[0]["actor"] == "test@assay"
    assert [e.payload_dict["to"] for e in events(reg, f"models:/{name}/", "model.state")] == [
        "known-good",
        "quarantined",
        "compromised",
    ]
    assert reg.backend.get_version(name, "1").tags["assay.state"] == "compromised"


def test_labels_are_audited_mirrored_and_validated(reg: Any, tmp_path: Path) -> None:
    from assay.registry.labels import set_labels

    name = fx.unique("labelled")
    fx.model(reg, name, tmp_path)
    record = set_labels(reg, name, "1", add=["robust", "eval.pgd"], reason="PGD eval 2026-11")
    assert record.labels == ["eval.pgd", "robust"]
    assert reg.backend.get_version(name, "1").tags["assay.labels"] == "eval.pgd,robust"
    assert set_labels(reg, name, "1", remove=["eval.pgd"]).labels == ["robust"]
    set_labels(reg, name, "1", add=["robust"])  # no change, no event
    changes = [e.payload_dict for e in events(reg, f"models:/{name}/1", "model.labels")]
    assert [c["to"] for c in changes] == [["eval.pgd", "robust"], ["robust"]]
    assert changes[0]["reason"] == "PGD eval 2026-11"
    with pytest.raises(AssayError, match="invalid label"):
        set_labels(reg, name, "1", add=["Robust!"])
    with pytest.raises(NotFoundError, match="no version 9"):
        set_labels(reg, name, "9", add=["robust"])


def test_mark_known_good_refuses_changed_bytes(reg: Any, tmp_path: Path) -> None:
    """The real verify_version: one byte changed in the artifact store."""
    name = fx.unique("tampered")
    fx.model(reg, name, tmp_path)
    fx.tamper(reg, name, "1")
    with pytest.raises(IntegrityError, match="known-good.*modified"):
        mark(reg, name, "1", "known-good", reason="CI")
    assert state_history(reg, name, "1") == []
    # Marking it bad needs no verification.
    assert mark(reg, name, "1", "compromised", reason="bytes changed").state == "compromised"


def test_mark_known_good_refuses_tainted_lineage(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fx.stub_verify(monkeypatch)
    data = fx.unique("customers")
    fx.dataset(reg, data, tmp_path)
    base, tuned = fx.unique("base"), fx.unique("tuned")
    fx.model(reg, base, tmp_path, datasets=(f"{data}@1",))
    fx.model(reg, tuned, tmp_path, parents=(f"{base}/1",))
    with reg.store.session() as session:
        artifact = require_artifact(session, "dataset", data, "1")
        set_state(reg, session, artifact, "quarantined", reason="poisoned")
    with pytest.raises(RefusedError, match=rf"dataset:{data}@1 is quarantined"):
        mark(reg, base, "1", "known-good", reason="CI")
    # Transitively, through the parent it was fine-tuned from.
    with pytest.raises(RefusedError, match=rf"dataset:{data}@1 is quarantined"):
        mark(reg, tuned, "1", "known-good", reason="CI")


def test_mark_bad_state_does_not_verify(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fx.stub_verify(monkeypatch, default=False)
    name = fx.unique("bad")
    fx.model(reg, name, tmp_path)
    assert mark(reg, name, "1", "quarantined", reason="r").state == "quarantined"
    assert calls == []


def test_mark_errors(reg: Any, tmp_path: Path) -> None:
    name = fx.unique("err")
    fx.model(reg, name, tmp_path)
    with pytest.raises(NotFoundError, match="no model named"):
        mark(reg, fx.unique("nosuch"), "1", "quarantined", reason="r")
    with pytest.raises(NotFoundError, match="has no version 7"):
        mark(reg, name, "7", "quarantined", reason="r")
    with pytest.raises(AssayError, match="unknown state"):
        mark(reg, name, "1", "great", reason="r")


def test_mark_dataset(reg: Any, tmp_path: Path) -> None:
    data = fx.unique("ds")
    fx.dataset(reg, data, tmp_path)
    record = mark(reg, data, "1", "known-good", reason="checked", kind="dataset")
    assert (record.kind, record.state) == ("dataset", "known-good")


def test_tag_failure_is_a_warning(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = fx.unique("tagfail")
    fx.model(reg, name, tmp_path)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise AssayError("MLflow is down")

    monkeypatch.setattr(reg.backend, "set_version_tag", broken)
    assert mark(reg, name, "1", "quarantined", reason="r").state == "quarantined"
    assert "could not tag" in caplog.text


# --- promote -----------------------------------------------------------------------------------


def test_promote_refuses_registered_and_quarantined(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fx.stub_verify(monkeypatch)
    name = fx.unique("promo")
    fx.model(reg, name, tmp_path)
    with pytest.raises(RefusedError, match="it is registered, not known-good"):
        promote(reg, name, "1")
    mark(reg, name, "1", "quarantined", reason="suspicious")
    with pytest.raises(RefusedError, match=r"quarantined \(suspicious\), not known-good"):
        promote(reg, name, "1")
    assert reg.backend.get_alias(name, "production") is None
    assert moves(reg, name) == []


def test_promote_refuses_a_version_that_does_not_verify(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = fx.unique("unverifiable")
    fx.model(reg, name, tmp_path)
    fx.stub_verify(monkeypatch)
    mark(reg, name, "1", "known-good", reason="CI")
    fx.stub_verify(monkeypatch, default=False)
    with pytest.raises(IntegrityError, match="refusing to promote .* modified"):
        promote(reg, name, "1")

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise NotFoundError("artifact file:///x does not exist")

    from assay.registry import uri_verify

    monkeypatch.setattr(uri_verify, "verify_version", unreachable)
    with pytest.raises(IntegrityError, match="cannot be verified now"):
        promote(reg, name, "1")
    assert reg.backend.get_alias(name, "production") is None


def test_promote_known_good_moves_and_records(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fx.stub_verify(monkeypatch)
    name = fx.unique("good")
    fx.model(reg, name, tmp_path)
    fx.model(reg, name, tmp_path)
    mark(reg, name, "1", "known-good", reason="CI")
    mark(reg, name, "2", "known-good", reason="CI")
    first = promote(reg, name, "1", reason="launch")
    assert (first.moved, first.from_version, first.to_version) == (True, None, "1")
    assert calls[-1] == (name, "1")
    second = promote(reg, name, "2", alias="production", reason="v2")
    assert (second.moved, second.from_version) == (True, "1")
    again = promote(reg, name, "2")
    assert not again.moved and not again.recorded and "already points" in (again.note or "")
    assert reg.backend.get_alias(name, "production") == "2"
    history = alias_history(reg, name, "production")
    assert [(h["from"], h["to"], h["via"]) for h in history] == [
        (None, "1", "promote"),
        ("1", "2", "promote"),
    ]
    done = events(reg, f"models:/{name}@production", "alias.move")
    assert [e.payload_dict["to"] for e in done] == ["1", "2"]
    assert done[0].payload_dict["verified"] is True


def test_force_needs_reason_and_is_recorded(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fx.stub_verify(monkeypatch, default=False)
    name = fx.unique("forced")
    fx.model(reg, name, tmp_path)
    with pytest.raises(AssayError, match="--force needs --reason"):
        promote(reg, name, "1", force=True)
    result = promote(reg, name, "1", force=True, reason="hotfix for outage", incident_id="inc-9")
    assert result.moved and result.forced and result.verified is False
    assert reg.backend.get_alias(name, "production") == "1"
    (move,) = moves(reg, name)
    assert (move.via, move.reason, move.incident_id) == ("promote", "hotfix for outage", "inc-9")
    (event,) = events(reg, f"models:/{name}@production", "alias.move")
    payload = event.payload_dict
    assert payload["forced"] is True and payload["reason"] == "hotfix for outage"
    assert payload["state"] == "registered"
    assert any("verification failed" in o for o in payload["overridden"])


def test_promote_refuses_tainted_lineage_unless_forced(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fx.stub_verify(monkeypatch)
    data, name = fx.unique("later-poisoned"), fx.unique("trained")
    fx.dataset(reg, data, tmp_path)
    fx.model(reg, name, tmp_path, datasets=(f"{data}@1",))
    mark(reg, name, "1", "known-good", reason="CI")
    mark(reg, data, "1", "quarantined", reason="poisoned", kind="dataset")
    with pytest.raises(
        RefusedError, match=rf"lineage is tainted \(dataset:{data}@1 is quarantined"
    ):
        promote(reg, name, "1")
    result = promote(reg, name, "1", force=True, reason="accepted risk")
    assert result.moved
    (event,) = events(reg, f"models:/{name}@production", "alias.move")
    assert any("tainted lineage" in o for o in event.payload_dict["overridden"])


def test_pending_registration_cannot_be_promoted_even_forced(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.store.models import ArtifactState

    fx.stub_verify(monkeypatch)
    name = fx.unique("pending")
    fx.model(reg, name, tmp_path)
    with reg.store.session() as session:
        artifact = require_artifact(session, "model", name, "1")
        session.get(ArtifactState, artifact.id).status = "pending"
    with pytest.raises(RefusedError, match="never completed"):
        promote(reg, name, "1", force=True, reason="r")
    with pytest.raises(RefusedError, match="never completed"):
        mark(reg, name, "1", "known-good", reason="r")


# --- freeze ------------------------------------------------------------------------------------


def test_freeze_refuses_promotion_even_forced_but_not_rollback(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fx.stub_verify(monkeypatch)
    name = fx.unique("frozen")
    fx.model(reg, name, tmp_path)
    fx.model(reg, name, tmp_path)
    mark(reg, name, "1", "known-good", reason="CI")
    mark(reg, name, "2", "known-good", reason="CI")
    promote(reg, name, "2")

    first = freeze(reg, name, reason="incident 7", incident_id="inc-7")
    assert first.changed and first.frozen
    assert not freeze(reg, name, reason="twice").changed  # idempotent, keeps the first reason
    with reg.store.session(readonly=True) as session:
        assert is_frozen(session, name)
    for kwargs in ({}, {"force": True, "reason": "urgent"}):
        with pytest.raises(RefusedError, match=r"frozen \(incident 7\): only `assay rollback`"):
            promote(reg, name, "1", **kwargs)
    with pytest.raises(RefusedError, match="frozen"):
        move_alias(reg, name, "staging", "1", via="register")

    back = move_alias(reg, name, "production", "1", via="rollback", reason="incident 7")
    assert back.moved and reg.backend.get_alias(name, "production") == "1"

    assert unfreeze(reg, name, reason="resolved").changed
    assert not unfreeze(reg, name).changed
    assert promote(reg, name, "2").moved
    actions = [e.action for e in events(reg, f"models:/{name}") if e.action.startswith("model.")]
    assert actions.count("model.freeze") == 1 and actions.count("model.unfreeze") == 1
    assert [(h["to"], h["via"]) for h in alias_history(reg, name, "production")] == [
        ("2", "promote"),
        ("1", "rollback"),
        ("2", "promote"),
    ]


def test_freeze_unknown_model(reg: Any) -> None:
    with pytest.raises(NotFoundError):
        freeze(reg, fx.unique("ghost"), reason="r")
    with pytest.raises(AssayError, match="reason"):
        freeze(reg, fx.unique("ghost"), reason="")


# --- crash safety of alias moves ---------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing catches it)."""


def test_crash_before_set_then_rerun_moves_once(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = fx.unique("crash1")
    fx.model(reg, name, tmp_path)
    backend = reg.backend
    real_set = backend.set_alias
    sets: list[str] = []

    def dying(n: str, a: str, v: str) -> None:
        raise Crash

    monkeypatch.setattr(backend, "set_alias", dying)
    with pytest.raises(Crash):
        move_alias(reg, name, "production", "1", via="promote", reason="r")
    assert backend.get_alias(name, "production") is None
    assert moves(reg, name) == []

    def counting(n: str, a: str, v: str) -> None:
        sets.append(v)
        real_set(n, a, v)

    monkeypatch.setattr(backend, "set_alias", counting)
    result = move_alias(reg, name, "production", "1", via="promote", reason="r")
    assert result.moved and sets == ["1"]
    assert [m.to_version for m in moves(reg, name)] == ["1"]
    subject = f"models:/{name}@production"
    assert [e.action for e in events(reg, subject)] == [
        "alias.intent",
        "alias.abandoned",
        "alias.intent",
        "alias.move",
    ]


def test_crash_after_set_then_rerun_records_without_moving_again(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = fx.unique("crash2")
    fx.model(reg, name, tmp_path)
    backend = reg.backend
    real_set = backend.set_alias
    sets: list[str] = []

    def set_then_die(n: str, a: str, v: str) -> None:
        sets.append(v)
        real_set(n, a, v)
        raise Crash

    monkeypatch.setattr(backend, "set_alias", set_then_die)
    with pytest.raises(Crash):
        move_alias(reg, name, "production", "1", via="promote", reason="r")
    assert backend.get_alias(name, "production") == "1"
    assert moves(reg, name) == []  # the transaction died with the process

    monkeypatch.setattr(backend, "set_alias", lambda *a: sets.append("again"))
    result = move_alias(reg, name, "production", "1", via="promote", reason="r")
    assert result.resumed and result.recorded and not result.moved
    assert sets == ["1"]
    (move,) = moves(reg, name)
    assert (move.from_version, move.to_version) == (None, "1")
    # A third run changes nothing.
    assert not move_alias(reg, name, "production", "1", via="promote").changed
    assert len(moves(reg, name)) == 1


def test_alias_set_outside_assay_is_adopted_not_moved(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = fx.unique("adopt")
    fx.model(reg, name, tmp_path)
    reg.backend.set_alias(name, "production", "1")
    monkeypatch.setattr(reg.backend, "set_alias", lambda *a: pytest.fail("moved again"))
    result = move_alias(reg, name, "production", "1", via="promote", reason="sanctioned")
    assert result.recorded and not result.moved and "outside assay" in (result.note or "")
    assert [m.to_version for m in moves(reg, name)] == ["1"]


def test_alias_moved_meanwhile_is_refused(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = fx.unique("race")
    fx.model(reg, name, tmp_path)
    fx.model(reg, name, tmp_path)
    fx.model(reg, name, tmp_path)
    backend = reg.backend
    real_get = backend.get_alias
    reads = iter(["1", "3"])  # first read plans from 1; under the lock someone set 3

    def racing(n: str, a: str) -> str | None:
        return next(reads, None) or real_get(n, a)

    monkeypatch.setattr(backend, "get_alias", racing)
    with pytest.raises(RefusedError, match="moved to 3 by someone else"):
        move_alias(reg, name, "production", "2", via="promote")
    assert moves(reg, name) == []


def test_move_alias_unknown_version(reg: Any, tmp_path: Path) -> None:
    name = fx.unique("unknown")
    fx.model(reg, name, tmp_path)
    with pytest.raises(NotFoundError, match="has no version 5"):
        move_alias(reg, name, "production", "5", via="promote")


def test_public_names() -> None:
    for name in states.__all__:
        assert hasattr(states, name)


def test_concurrent_freezes_and_state_changes_serialise(reg: Any, tmp_path: Path) -> None:
    """Four processes' worth of registries freezing, and changing the state of, one model at
    once: one change each, recorded once. On PostgreSQL the second freeze used to fail with a
    duplicate key (seen with two incidents at once)."""
    import threading

    from assay.core.settings import Settings
    from assay.registry.facade import Registry
    from assay.registry.versions import require_artifact, set_state

    name = fx.unique("race")
    fx.model(reg, name, tmp_path)
    others = [Registry.open(Settings.from_env()) for _ in range(4)]
    errors: list[BaseException] = []
    for state in ("compromised", "quarantined", "compromised"):
        barrier = threading.Barrier(len(others))

        def go(r: Any, state: str = state, barrier: Any = barrier) -> None:
            try:
                barrier.wait()
                freeze(r, name, reason="incident")
                with r.store.session() as session:
                    artifact = require_artifact(session, "model", name, "1")
                    set_state(r, session, artifact, state, reason="incident")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(r,)) for r in others]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        unfreeze(reg, name, reason="next round")
    for r in others:
        r.store.dispose()
    assert len(events(reg, f"models:/{name}", "model.freeze")) == 3
    changes = [e.payload_dict["to"] for e in events(reg, f"models:/{name}/1", "model.state")]
    assert changes == ["compromised", "quarantined", "compromised"]

"""Trust rules: ``signature_time_problem``, KeyService revocation, and the sqlite3 trust view."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select
from trust_helpers import bootstrap_admin

from assay.core.errors import ConfigError, NotFoundError, RefusedError
from assay.core.settings import Settings
from assay.integrity.keys import generate_key
from assay.registry.facade import Registry
from assay.registry.trust_view import SqliteTrustView, open_trust_view
from assay.store.models import AuditEvent, Key
from assay.store.sqlite_readonly import sqlite_path
from assay.store.store import Store
from assay.trust.key_records import KeyRecord, signature_time_problem

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def record(
    revoked_at: datetime | None = None, compromised_since: datetime | None = None
) -> KeyRecord:
    return KeyRecord(
        key_id="ab" * 32,
        name="k",
        key_type="ecdsa-p256",
        created_at=T0 - 10 * HOUR,
        has_private=True,
        trusted=True,
        revoked_at=revoked_at,
        revoke_reason="test" if revoked_at else None,
        compromised_since=compromised_since,
    )


# -- signature_time_problem ----------------------------------------------------------------------


def test_active_key_accepts_any_signature():
    assert record().cutoff is None and record().status == "active"
    assert signature_time_problem(record(), T0) is None
    assert signature_time_problem(record(), None) is None  # unrecorded is fine while active


def test_revoked_key_cutoff_is_revocation_time():
    r = record(revoked_at=T0)
    assert r.cutoff == T0 and r.status == "revoked"
    assert signature_time_problem(r, T0 - timedelta(microseconds=1)) is None
    at = signature_time_problem(r, T0)  # at the cutoff: already too late
    assert at is not None and "revoked at" in at
    assert signature_time_problem(r, T0 + HOUR) is not None


def test_unrecorded_signature_fails_once_revoked():
    problem = signature_time_problem(record(revoked_at=T0), None)
    assert problem is not None and "never recorded" in problem


def test_compromise_before_revocation_wins():
    r = record(revoked_at=T0, compromised_since=T0 - 5 * HOUR)
    assert r.cutoff == T0 - 5 * HOUR and r.status == "compromised"
    assert signature_time_problem(r, T0 - 6 * HOUR) is None
    problem = signature_time_problem(r, T0 - 5 * HOUR)
    assert problem is not None and "compromised since" in problem
    assert signature_time_problem(r, T0 - HOUR) is not None


def test_compromise_after_revocation_keeps_revocation_cutoff():
    r = record(revoked_at=T0, compromised_since=T0 + HOUR)
    assert r.cutoff == T0
    problem = signature_time_problem(r, T0 + timedelta(minutes=1))
    assert problem is not None and "revoked at" in problem
    assert signature_time_problem(r, T0 - timedelta(minutes=1)) is None


def test_key_record_to_dict():
    d = record(revoked_at=T0).to_dict()
    assert d["status"] == "revoked" and d["revoked_at"] == T0.isoformat()
    assert d["compromised_since"] is None


# -- KeyService ----------------------------------------------------------------------------------


@pytest.fixture
def settings(assay_home: Path) -> Settings:
    return Settings.from_env()


@pytest.fixture
def registry(settings: Settings):
    """A registry with its store created (no MLflow: not needed for keys)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    store = Store.open(settings, create=True)
    registry = Registry(settings, store)
    bootstrap_admin(registry)
    yield registry
    store.dispose()


def _revocations(registry: Registry) -> int:
    with registry.store.session(readonly=True) as session:
        return len(
            list(session.scalars(select(AuditEvent).where(AuditEvent.action == "key.revoke")))
        )


def test_revoke_is_idempotent(registry: Registry):
    key = registry.keys.generate(name="k1")
    first = registry.keys.revoke(key.key_id, reason="rotated")
    assert first.status == "revoked" and first.revoked_at is not None
    assert first.revoke_reason == "rotated"
    again = registry.keys.revoke(key.key_id, reason="something else")
    assert again.revoked_at == first.revoked_at
    assert again.revoke_reason == "rotated"
    assert _revocations(registry) == 1  # the no-op re-run records nothing


def test_earliest_compromise_wins(registry: Registry):
    key = registry.keys.generate(name="k1")
    now = datetime.now(timezone.utc)
    r1 = registry.keys.revoke(key.key_id, reason="leak", compromised_since=now - 2 * HOUR)
    assert r1.compromised_since == now - 2 * HOUR
    assert r1.cutoff == now - 2 * HOUR
    later = registry.keys.revoke(key.key_id, reason="leak", compromised_since=now - HOUR)
    assert later.compromised_since == now - 2 * HOUR  # a later time never narrows it
    assert _revocations(registry) == 1
    earlier = registry.keys.revoke(key.key_id, reason="leak", compromised_since=now - 5 * HOUR)
    assert earlier.compromised_since == now - 5 * HOUR
    assert earlier.revoked_at == r1.revoked_at  # the revocation time stays
    assert _revocations(registry) == 2


def test_compromise_can_be_added_to_a_revoked_key(registry: Registry):
    key = registry.keys.generate(name="k1")
    plain = registry.keys.revoke(key.key_id, reason="rotated")
    assert plain.compromised_since is None
    since = datetime.now(timezone.utc) - 3 * HOUR
    later = registry.keys.revoke(key.key_id, reason="stolen", compromised_since=since)
    assert later.status == "compromised" and later.cutoff == since


def test_future_compromise_refused(registry: Registry):
    key = registry.keys.generate(name="k1")
    with pytest.raises(RefusedError, match="future"):
        registry.keys.revoke(
            key.key_id,
            reason="x",
            compromised_since=datetime.now(timezone.utc) + timedelta(days=1),
        )
    assert registry.keys.get(key.key_id).status == "active"
    assert _revocations(registry) == 0


def test_revoked_key_cannot_be_trusted_again(registry: Registry):
    key = registry.keys.generate(name="k1")
    pem = registry.keys.export(key.key_id)
    registry.keys.revoke(key.key_id, reason="rotated")
    with pytest.raises(RefusedError, match="revoked"):
        registry.keys.trust(pem, name="again")
    assert registry.keys.get(key.key_id).status == "revoked"


def test_revoked_key_cannot_sign(registry: Registry):
    key = registry.keys.generate(name="k1")
    registry.keys.signing_key(key.key_id)  # fine while active
    registry.keys.revoke(key.key_id, reason="rotated")
    with pytest.raises(RefusedError, match="refusing to sign"):
        registry.keys.signing_key(key.key_id)


def test_revoke_unknown_key(registry: Registry):
    with pytest.raises(NotFoundError):
        registry.keys.revoke("deadbeefdeadbeef", reason="x")


def test_trust_is_idempotent(registry: Registry):
    public = generate_key("ecdsa-p256").public_key
    first = registry.keys.trust(public.pem, name="partner")
    second = registry.keys.trust(public.pem, name="other-name")
    assert first.key_id == second.key_id == public.key_id
    assert second.name == "partner"
    assert [k.key_id for k in registry.keys.list() if k.name != "admin"] == [public.key_id]


# -- SqliteTrustView agrees with KeyService ------------------------------------------------------


def _record_signature(registry: Registry, tmp_path: Path, key_ref: str) -> tuple[str, str]:
    model = tmp_path / f"model-{key_ref}"
    model.mkdir()
    (model / "w.bin").write_bytes(key_ref.encode())
    result = registry.sign_path(model, key=key_ref)
    return Path(result.signature_path).read_text(), result.root_digest


def test_sqlite_view_agrees_with_key_service(registry: Registry, tmp_path: Path):
    active = registry.keys.generate(name="active")
    revoked = registry.keys.generate(name="revoked", key_type="ed25519")
    bundle_a, root_a = _record_signature(registry, tmp_path, "active")
    bundle_r, root_r = _record_signature(registry, tmp_path, "revoked")
    registry.keys.revoke(
        revoked.key_id,
        reason="stolen",
        compromised_since=datetime.now(timezone.utc) - HOUR,
    )
    outsider = generate_key("ecdsa-p256").public_key

    path = sqlite_path(registry.settings.db_url)
    assert path is not None
    view = SqliteTrustView(registry.settings, path)
    service = registry.keys
    assert isinstance(open_trust_view(registry.settings), SqliteTrustView)

    for key_id in (active.key_id, revoked.key_id):
        public = service.public_key(key_id)
        assert public is not None
        for hint, pem in ((public.oms_hint, None), (key_id, None), (None, public.pem)):
            got_view = view.for_hint(hint, pem)
            got_service = service.for_hint(hint, pem)
            assert got_view is not None and got_service is not None
            assert got_view[1].key_id == got_service[1].key_id == key_id
            rv, rs = got_view[0], got_service[0]
            for attr in (
                "key_id",
                "name",
                "key_type",
                "revoked_at",
                "revoke_reason",
                "compromised_since",
                "cutoff",
                "status",
                "trusted",
            ):
                assert getattr(rv, attr) == getattr(rs, attr), attr
    assert view.for_hint(outsider.oms_hint) is None
    assert service.for_hint(outsider.oms_hint) is None
    assert view.for_hint(None, outsider.pem) is None
    assert service.for_hint(None, outsider.pem) is None

    for bundle, root, key in ((bundle_a, root_a, active), (bundle_r, root_r, revoked)):
        at_view = view.recorded_at(bundle, root, key.key_id)
        at_service = service.recorded_at(bundle, root, key.key_id)
        assert at_view is not None and at_view == at_service
        assert at_view.tzinfo is not None
        # same root, another bundle text: not recorded
        assert view.recorded_at(bundle + " ", root, key.key_id) == at_view  # whitespace only
        assert view.recorded_at(bundle.replace("{", "{ ", 1), root, key.key_id) is None
        assert service.recorded_at(bundle.replace("{", "{ ", 1), root, key.key_id) is None
    assert view.recorded_at(bundle_a, root_a, revoked.key_id) is None
    assert service.recorded_at(bundle_a, root_a, revoked.key_id) is None

    # the verdicts agree too
    rec_view, _ = view.for_hint(None, service.public_key(revoked.key_id).pem)
    assert signature_time_problem(rec_view, view.recorded_at(bundle_r, root_r, revoked.key_id))
    rec_view, _ = view.for_hint(active.key_id)
    assert (
        signature_time_problem(rec_view, view.recorded_at(bundle_a, root_a, active.key_id)) is None
    )


def test_sqlite_view_sees_later_changes(registry: Registry):
    key = registry.keys.generate(name="k1")
    view = open_trust_view(registry.settings)
    assert view.for_hint(key.key_id)[0].revoked_at is None
    registry.keys.revoke(key.key_id, reason="rotated")
    assert view.for_hint(key.key_id)[0].revoked_at == registry.keys.get(key.key_id).revoked_at


def test_sqlite_view_before_init(settings: Settings):
    path = sqlite_path(settings.db_url)
    assert path is not None
    with pytest.raises(ConfigError, match="run `assay init`"):
        SqliteTrustView(settings, path)
    with pytest.raises(ConfigError, match="run `assay init`"):
        open_trust_view(settings)
    assert not path.exists()


def test_sqlite_view_rejects_a_non_store(settings: Settings):
    settings.home.mkdir(parents=True)
    path = sqlite_path(settings.db_url)
    assert path is not None
    path.write_bytes(b"this is not a database" * 10)
    with pytest.raises(ConfigError):
        SqliteTrustView(settings, path)


def test_sqlite_path():
    assert sqlite_path("sqlite:////tmp/x/assay.db") == Path("/tmp/x/assay.db")
    assert sqlite_path("sqlite+pysqlite:////tmp/a.db") == Path("/tmp/a.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("sqlite:////tmp/a.db?mode=ro") is None
    assert sqlite_path("postgresql://u@h/db") is None


def test_non_sqlite_url_uses_key_service(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    settings.home.mkdir(parents=True, exist_ok=True)
    url = f"sqlite+pysqlite:///{settings.home / 'other.db'}?timeout=5"
    monkeypatch.setenv("ASSAY_DB_URL", url)
    other = Settings.from_env()
    store = Store.open(other, create=True)
    try:
        view = open_trust_view(other)
        assert not isinstance(view, SqliteTrustView)
        assert view.for_hint("anything") is None
    finally:
        store.dispose()


def test_key_ids_in_store_match_public_keys(registry: Registry):
    registry.keys.generate(name="k1")
    with registry.store.session(readonly=True) as session:
        for row in session.scalars(select(Key)):
            assert registry.keys.public_key(row.key_id).key_id == row.key_id


def test_compromised_key_change_statement_is_timed_at_its_latest_evidence(registry: Registry):
    """A change statement's signer-chosen ``at`` is only one bound: the store's recorded time and
    the subject's registration time count too (review F10)."""
    from assay.trust.signed_changes import sign_change, signed_state

    key = generate_key("ecdsa-p256")
    registry.keys.trust(key.public_key.pem, name="stolen", roles=["approver"])
    now = datetime.now(timezone.utc)
    registry.keys.revoke(key.key_id, reason="leak", compromised_since=now - HOUR)
    root = "ab" * 32
    text, _ = sign_change(
        key,
        action="model.state",
        subject="models:/m/1",
        payload={"to": "known-good"},
        digest=root,
        display_name="x",
        at=now - 2 * HOUR,  # backdated before the compromise
        seq=3,
    )
    trust = registry.keys.trust_list()

    def state(recorded_at, not_before=None):  # type: ignore[no-untyped-def]
        return signed_state(
            [(text, recorded_at)],
            trust,
            subject="models:/m/1",
            manifest_root=root,
            not_before=not_before,
        )

    early = state(now - 2 * HOUR)  # everything says before the compromise: it still counts
    assert early is not None and early.seq == 3 and early.payload == {"to": "known-good"}
    assert state(now) is None  # recorded after the compromise
    assert state(now - 2 * HOUR, not_before=now - HOUR / 2) is None  # about a later version


def test_audit_disagreement_rules():
    from assay.trust.signed_changes import SignedChange, StateEvent, audit_disagreement

    def change(to: str, seq: int | None) -> SignedChange:
        return SignedChange("model.state", "models:/m/1", {"to": to}, T0, "k", "ab", seq)

    assert audit_disagreement(None, None) is None  # never changed
    assert audit_disagreement(change("known-good", 4), StateEvent(4, "known-good")) is None
    assert audit_disagreement(change("known-good", None), StateEvent(9, "known-good")) is None
    assert "no state event" in str(audit_disagreement(change("known-good", 4), None))
    assert "no signed state" in str(audit_disagreement(None, StateEvent(4, "quarantined")))
    assert "set quarantined" in str(
        audit_disagreement(change("known-good", 2), StateEvent(4, "quarantined"))
    )
    assert "belongs to audit event 2" in str(
        audit_disagreement(change("known-good", 2), StateEvent(4, "known-good"))
    )
    assert StateEvent.from_row(5, "not json") == StateEvent(5, None)
    assert audit_disagreement(change("known-good", 5), StateEvent.from_row(5, "[1]")) is not None

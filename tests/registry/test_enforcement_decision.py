"""The enforcement decision, attacked as someone with plain MLflow (or database) write access would.

Each test sets up what the issue describes (a compromised version moved behind ``production``
with plain MLflow, an unsigned version, a pending one, a state row or a policy edited in the
database, a key revoked after promotion, an unreachable store) and checks that
``decide``, the plugin's ``verify_download``, ``verify_uri`` and ``assay verify`` all refuse.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import registry_fixtures as fx
from click.testing import CliRunner

from assay.cli import cli
from assay.core.errors import IntegrityError, RefusedError
from assay.core.settings import Settings
from assay.integrity.keys import generate_key
from assay.registry.enforcement import decide, verify_download
from assay.registry.facade import Registry
from assay.registry.states import mark, promote
from assay.registry.uri_verify import verify_uri
from assay.store.models import utcnow
from assay.trust.policy import parse_policy_text
from assay.trust.policy_service import set_policy

world = fx.home_fixture()


def _sql(reg, statement: str, **params):  # type: ignore[no-untyped-def]
    """Edit or read the store behind assay's back (SQLite or PostgreSQL), as an attacker would."""
    from sqlalchemy import text

    with reg.store.engine.begin() as conn:
        result = conn.execute(text(statement), params)
        return result.all() if result.returns_rows else []


def _cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def _good(reg: Registry, name: str, root: Path) -> str:
    """A registered, known-good version serving as production."""
    version = fx.model(reg, name, root)
    mark(reg, name, version, "known-good", reason="evaluated")
    promote(reg, name, version, alias="production", reason="release")
    return version


def test_known_good_version_behind_production_loads(world, tmp_path: Path) -> None:
    _, reg = world
    name = fx.unique("ok")
    version = _good(reg, name, tmp_path)
    decision = decide(reg, name, version, alias="production")
    assert decision.allowed and decision.code == "ok", decision.reason
    assert verify_uri(reg, f"models:/{name}@production").ok
    assert _cli("verify", f"models:/{name}@production").exit_code == 0


def test_compromised_version_moved_behind_production_with_plain_mlflow(world, tmp_path) -> None:
    _, reg = world
    name = fx.unique("comp")
    _good(reg, name, tmp_path)
    bad = fx.model(reg, name, tmp_path)
    mark(reg, name, bad, "compromised", reason="stolen key")
    reg.backend.set_alias(name, "production", bad)  # plain MLflow: assay is not asked
    decision = decide(reg, name, bad, alias="production")
    assert not decision.allowed and decision.code == "compromised"
    assert "assay rollback" in decision.reason
    assert not decide(reg, name, bad).allowed  # by number too
    result = _cli("verify", f"models:/{name}@production")
    assert result.exit_code == 3 and "compromised" in result.output
    with pytest.raises(IntegrityError, match="compromised"):
        verify_download(name, bad, str(tmp_path))


def test_quarantined_version_by_number(world, tmp_path: Path) -> None:
    _, reg = world
    name = fx.unique("quar")
    version = fx.model(reg, name, tmp_path)
    mark(reg, name, version, "quarantined", reason="incident")
    assert decide(reg, name, version).code == "quarantined"


def test_unsigned_version_behind_production(world, tmp_path: Path) -> None:
    _, reg = world
    name = fx.unique("unsigned")
    _good(reg, name, tmp_path)
    evil = fx.mlflow_only_version(reg, name, tmp_path)
    reg.backend.set_alias(name, "production", evil)
    decision = decide(reg, name, evil, alias="production")
    assert not decision.allowed and decision.code == "unsigned"
    assert "not registered through assay" in decision.reason
    result = _cli("verify", f"models:/{name}@production", "--json")
    assert result.exit_code == 3 and "not registered through assay" in result.output


def test_unmanaged_model_refused_unless_the_policy_allows_it(world, tmp_path: Path) -> None:
    _, reg = world
    name = fx.unique("plain")
    version = fx.mlflow_only_version(reg, name, tmp_path)
    decision = decide(reg, name, version)
    assert not decision.allowed and decision.code == "unmanaged"
    try:
        set_policy(reg, parse_policy_text("allow_unmanaged: true\n"))
        allowed = decide(reg, name, version)
        assert allowed.allowed and allowed.code == "unmanaged"
    finally:
        set_policy(reg, parse_policy_text("allow_unmanaged: false\n"))
    assert not decide(reg, name, version).allowed


def test_pending_registration_never_loads(world, tmp_path, monkeypatch) -> None:
    from assay.registry import registration

    _, reg = world
    name = fx.unique("pending")
    with monkeypatch.context() as mp:
        mp.setattr(registration, "_record", lambda *a, **k: (_ for _ in ()).throw(OSError("cut")))
        with pytest.raises(OSError):
            fx.model(reg, name, tmp_path)
    decision = decide(reg, name, "1")
    assert not decision.allowed and decision.code == "pending"
    assert "re-run `assay register`" in decision.reason


def test_registered_but_not_known_good_behind_a_protected_alias(world, tmp_path) -> None:
    _, reg = world
    name = fx.unique("fresh")
    version = fx.model(reg, name, tmp_path)
    reg.backend.set_alias(name, "production", version)
    refused = decide(reg, name, version, alias="production")
    assert not refused.allowed and refused.code == "not-known-good"
    assert decide(reg, name, version).allowed  # by number: registered versions load
    assert decide(reg, name, version, alias="staging").allowed  # not protected
    for spelling in ("Production", "PRODUCTION"):  # MLflow keeps these as separate aliases
        assert decide(reg, name, version, alias=spelling).code == "not-known-good"
    mark(reg, name, version, "known-good", reason="evaluated")
    assert decide(reg, name, version, alias="production").allowed


def test_state_row_edited_in_the_database(world, tmp_path: Path) -> None:
    home, reg = world
    name = fx.unique("edited")
    version = fx.model(reg, name, tmp_path)
    mark(reg, name, version, "compromised", reason="backdoor")
    _sql(
        reg,
        "UPDATE artifact_states SET state = 'known-good' WHERE artifact_id ="
        " (SELECT id FROM artifacts WHERE kind = 'model' AND name = :n AND version = :v)",
        n=name,
        v=version,
    )
    decision = decide(reg, name, version, alias="production")
    assert not decision.allowed and decision.code == "tampered-state"
    assert "edited outside assay" in decision.reason


def test_the_bytes_mlflow_serves_are_checked_not_only_the_recorded_location(
    world, tmp_path: Path
) -> None:
    """MLflow's record of where a version lives can be edited apart from assay's: the decision
    checks what a load would get (the review's F13), and an identical copy elsewhere passes."""
    import shutil

    from sqlalchemy import create_engine, text

    from assay.mlflow_access.artifacts import local_path_of

    _, reg = world
    name = fx.unique("moved")
    version = fx.model(reg, name, tmp_path)
    stored = local_path_of(reg.backend.get_version(name, version).source)
    assert stored is not None

    def serve_from(folder: Path) -> None:
        engine = create_engine(reg.settings.tracking_uri)
        try:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "UPDATE model_versions SET source = :u, storage_location = :u"
                        " WHERE name = :n AND version = :v"
                    ),
                    {"u": folder.as_uri(), "n": name, "v": int(version)},
                )
        finally:
            engine.dispose()

    same = tmp_path / "same"
    shutil.copytree(stored, same)
    serve_from(same)
    assert decide(reg, name, version).allowed  # the same bytes, elsewhere
    evil = tmp_path / "evil"
    shutil.copytree(stored, evil)
    (evil / "weights.bin").write_bytes(b"swapped")
    serve_from(evil)
    decision = decide(reg, name, version)
    assert not decision.allowed and decision.code == "tampered"
    assert "weights.bin" in decision.reason and "MLflow now serves it from" in decision.reason


def test_tampered_bytes_refused_with_the_files_named(world, tmp_path: Path) -> None:
    _, reg = world
    name = fx.unique("bytes")
    version = _good(reg, name, tmp_path)
    fx.tamper(reg, name, version)
    decision = decide(reg, name, version, alias="production")
    assert not decision.allowed and decision.code == "tampered"
    assert "weights.bin" in decision.reason


def test_policy_edited_in_the_database_refuses_everything(world, tmp_path: Path) -> None:
    home, reg = world
    name = fx.unique("pol")
    version = _good(reg, name, tmp_path)
    set_policy(reg, parse_policy_text("protected_aliases: [production, canary]\n"))
    import base64
    import json

    (row_id, bundle) = _sql(
        reg, "SELECT id, bundle FROM signatures WHERE subject = 'urn:assay:policy' ORDER BY id DESC"
    )[0]
    envelope = json.loads(bundle)
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["predicate"]["policy"]["protected_aliases"] = []
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    _sql(reg, "UPDATE signatures SET bundle = :b WHERE id = :i", b=json.dumps(envelope), i=row_id)
    try:
        decision = decide(reg, name, version, alias="production")
        assert not decision.allowed and decision.code == "store-unreadable"
        result = _cli("policy", "show")
        assert result.exit_code == 3
    finally:
        _sql(reg, "UPDATE signatures SET bundle = :b WHERE id = :i", b=bundle, i=row_id)
    assert decide(reg, name, version, alias="production").allowed


def test_key_revoked_between_promotion_and_load(world, tmp_path, monkeypatch) -> None:
    _, reg = world
    ci = generate_key("ecdsa-p256")
    pem = tmp_path / "ci.pem"
    pem.write_bytes(ci.private_pem(None))
    reg.keys.trust(ci.public_key.pem, name=fx.unique("ci"), roles=["signer"])
    name = fx.unique("revoked")
    with monkeypatch.context() as mp:
        mp.setenv("ASSAY_KEY", str(pem))
        ci_reg = Registry.open(Settings.from_env())
        version = fx.model(ci_reg, name, tmp_path)
        with pytest.raises(RefusedError, match="lacks the 'approver' role"):
            mark(ci_reg, name, version, "known-good", reason="self-approval")
    mark(reg, name, version, "known-good", reason="evaluated")
    promote(reg, name, version, alias="production", reason="release")
    assert decide(reg, name, version, alias="production").allowed
    reg.keys.revoke(ci.key_id, reason="leaked", compromised_since=utcnow() - timedelta(hours=1))
    decision = decide(reg, name, version, alias="production")
    assert not decision.allowed and decision.code == "tampered"
    assert "compromised since" in decision.reason


def test_store_unreachable_or_home_empty_refuses(world, tmp_path, monkeypatch) -> None:
    _, reg = world
    name = fx.unique("reach")
    version = _good(reg, name, tmp_path)
    copy = fx.stored_folder(reg, name, version)
    verify_download(name, version, str(copy))  # reachable: fine
    with monkeypatch.context() as mp:
        mp.setenv("ASSAY_DB_URL", "postgresql+psycopg://assay:wrong@127.0.0.1:1/none")
        with pytest.raises(IntegrityError, match="refusing"):
            verify_download(name, version, str(copy))
    with monkeypatch.context() as mp:
        mp.setenv("ASSAY_HOME", str(tmp_path / "empty-home"))
        mp.delenv("ASSAY_DB_URL", raising=False)  # the empty home's own (missing) store
        with pytest.raises(IntegrityError, match="fail closed"):
            verify_download(name, version, str(copy))


def test_state_changes_are_signed_statements_by_the_acting_key(world, tmp_path) -> None:
    home, reg = world
    name = fx.unique("signed")
    version = _good(reg, name, tmp_path)
    subjects = [
        r[0]
        for r in _sql(
            reg,
            "SELECT subject FROM signatures WHERE subject LIKE 'change:%' AND subject LIKE :p",
            p=f"%{name}%",
        )
    ]
    assert f"change:models:/{name}/{version}" in subjects  # the mark
    assert f"change:models:/{name}@production" in subjects  # the promotion
    events = [e for e in reg.audit_events() if name in e["subject"]]
    admin = reg.keys.trust_list().root
    assert events and all(e["actor"].startswith(f"key:{admin[:16]}") for e in events)


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("ASSAY_TEST_PG_URL"), reason="ASSAY_TEST_PG_URL is not set")
def test_wrong_postgres_credentials_refuse(world, tmp_path, monkeypatch) -> None:
    """A real PostgreSQL that refuses the login (unknown role): the load is refused."""
    from sqlalchemy.engine import make_url

    _, reg = world
    name = fx.unique("pgcreds")
    version = _good(reg, name, tmp_path)
    bad = make_url(os.environ["ASSAY_TEST_PG_URL"]).set(username="assay_no_such_role", password="x")
    monkeypatch.setenv("ASSAY_DB_URL", bad.render_as_string(hide_password=False))
    with pytest.raises(IntegrityError, match="refusing"):
        verify_download(name, version, str(fx.stored_folder(reg, name, version)))


def test_quarantined_and_pending_refused_by_alias_too(world, tmp_path: Path) -> None:
    _, reg = world
    name = fx.unique("byalias")
    version = _good(reg, name, tmp_path)
    mark(reg, name, version, "quarantined", reason="incident")
    for alias in ("production", "staging", None):
        assert decide(reg, name, version, alias=alias).code == "quarantined"


# -- rollback of the signed state (review F2, F10) -------------------------------------------


def _delete_newest_statement_and_edit_row(reg, name: str, version: str, state: str) -> None:
    """What the review's repro does: drop the newest change statement, set the row back."""
    subject = f"change:models:/{name}/{version}"
    (newest,) = _sql(reg, "SELECT MAX(id) FROM signatures WHERE subject = :s", s=subject)[0]
    _sql(reg, "DELETE FROM signatures WHERE id = :i", i=newest)
    _sql(
        reg,
        "UPDATE artifact_states SET state = :st WHERE artifact_id ="
        " (SELECT id FROM artifacts WHERE kind = 'model' AND name = :n AND version = :v)",
        st=state,
        n=name,
        v=version,
    )


@pytest.mark.parametrize("bad", ["quarantined", "compromised"])
def test_newest_state_statement_deleted_and_row_edited_is_refused(world, tmp_path, bad) -> None:
    """Review F2: deleting the ``bad`` statement leaves the known-good one newest; the audit
    log's newest state event still says ``bad``, so the decision refuses (exit 3)."""
    _, reg = world
    name = fx.unique(f"rollback-{bad}")
    version = _good(reg, name, tmp_path)
    mark(reg, name, version, bad, reason="backdoor")
    _delete_newest_statement_and_edit_row(reg, name, version, "known-good")
    for alias in ("production", None):
        decision = decide(reg, name, version, alias=alias)
        assert not decision.allowed and decision.code == "tampered-state", decision.reason
        assert "newest state event" in decision.reason and f"set {bad}" in decision.reason
    assert not verify_uri(reg, f"models:/{name}@production").ok
    result = _cli("verify", f"models:/{name}@production")  # the sqlite3 fast path on SQLite
    assert result.exit_code == 3 and f"set {bad}" in result.output
    with pytest.raises(IntegrityError, match="edited outside assay"):
        verify_download(name, version, str(fx.stored_folder(reg, name, version)))


def test_all_state_statements_deleted_is_refused(world, tmp_path: Path) -> None:
    """No statement left at all (row set to ``registered``): the audit log still has events."""
    _, reg = world
    name = fx.unique("nostatements")
    version = fx.model(reg, name, tmp_path)
    mark(reg, name, version, "quarantined", reason="incident")
    _sql(reg, "DELETE FROM signatures WHERE subject = :s", s=f"change:models:/{name}/{version}")
    _sql(
        reg,
        "UPDATE artifact_states SET state = 'registered' WHERE artifact_id ="
        " (SELECT id FROM artifacts WHERE kind = 'model' AND name = :n AND version = :v)",
        n=name,
        v=version,
    )
    decision = decide(reg, name, version, alias="staging")
    assert not decision.allowed and decision.code == "tampered-state", decision.reason
    assert "no signed state statement" in decision.reason


def test_state_event_appended_behind_assays_back_is_refused(world, tmp_path: Path) -> None:
    """The attacker also appends a ``known-good`` audit event (an append verifies against any
    earlier checkpoint): the remaining statement names an older event, so it is refused."""
    _, reg = world
    name = fx.unique("fakeevent")
    version = _good(reg, name, tmp_path)
    mark(reg, name, version, "quarantined", reason="backdoor")
    _delete_newest_statement_and_edit_row(reg, name, version, "known-good")
    with reg.store.session() as session:  # a valid leaf, as anyone with the schema can write
        reg.audit.append(
            session,
            actor="attacker",
            action="model.state",
            subject=f"models:/{name}/{version}",
            payload={"from": "quarantined", "to": "known-good", "reason": "x", "incident_id": None},
        )
    decision = decide(reg, name, version, alias="production")
    assert not decision.allowed and decision.code == "tampered-state", decision.reason
    assert "belongs to audit event" in decision.reason
    assert _cli("verify", f"models:/{name}@production").exit_code == 3


def test_statements_name_their_audit_event(world, tmp_path: Path) -> None:
    import base64
    import json

    _, reg = world
    name = fx.unique("seq")
    version = _good(reg, name, tmp_path)
    (bundle,) = _sql(
        reg,
        "SELECT bundle FROM signatures WHERE subject = :s ORDER BY id DESC",
        s=f"change:models:/{name}/{version}",
    )[0]
    predicate = json.loads(base64.b64decode(json.loads(bundle)["payload"]))["predicate"]
    (seq,) = _sql(
        reg,
        "SELECT MAX(seq) FROM audit_events WHERE action = 'model.state' AND subject = :s",
        s=f"models:/{name}/{version}",
    )[0]
    assert predicate["seq"] == seq and predicate["payload"]["to"] == "known-good"


def _legacy_statements(reg, name: str, version: str, key) -> None:  # type: ignore[no-untyped-def]
    """Re-sign every state statement of the version as assay did before statements named their
    audit event (no ``seq``), keeping ``at`` and ``recorded_at``."""
    import base64
    import json

    from assay.core.canonical import parse_iso_utc
    from assay.trust.signed_changes import sign_change

    subject = f"models:/{name}/{version}"
    rows = _sql(reg, "SELECT id, bundle FROM signatures WHERE subject = :s", s=f"change:{subject}")
    for row_id, bundle in rows:
        envelope = json.loads(bundle)
        statement = json.loads(base64.b64decode(envelope["payload"]))
        predicate = statement["predicate"]
        text, _ = sign_change(
            key,
            action=predicate["action"],
            subject=subject,
            payload=predicate["payload"],
            digest=statement["subject"][0]["digest"]["sha256"],
            display_name=predicate["actor"],
            at=parse_iso_utc(predicate["at"]),
        )
        _sql(
            reg,
            "UPDATE signatures SET bundle = :b, key_id = :k WHERE id = :i",
            b=text,
            k=key.key_id,
            i=row_id,
        )


def _approver(reg, tmp_path: Path, name: str):  # type: ignore[no-untyped-def]
    key = generate_key("ecdsa-p256")
    reg.keys.trust(key.public_key.pem, name=fx.unique(name), roles=["approver"])
    return key


def test_versions_signed_before_statements_named_their_event_still_load(world, tmp_path) -> None:
    """Statements without ``seq`` are compared by the state they set: a good one loads, and the
    review's deletion is still refused."""
    _, reg = world
    key = _approver(reg, tmp_path, "legacy")
    name = fx.unique("legacy")
    version = _good(reg, name, tmp_path)
    _legacy_statements(reg, name, version, key)
    decision = decide(reg, name, version, alias="production")
    assert decision.allowed, decision.reason
    assert _cli("verify", f"models:/{name}@production").exit_code == 0
    mark(reg, name, version, "quarantined", reason="backdoor")
    _legacy_statements(reg, name, version, key)
    _delete_newest_statement_and_edit_row(reg, name, version, "known-good")
    decision = decide(reg, name, version, alias="production")
    assert not decision.allowed and decision.code == "tampered-state", decision.reason


def test_backdated_statement_from_a_compromised_key_is_refused(world, tmp_path) -> None:
    """Review F10: a key compromised since T signs "known-good" for a version registered after T,
    dated (and recorded) before T; the version's registration bounds the signing time."""
    from assay.store.models import Signature
    from assay.trust.signed_changes import sign_change

    _, reg = world
    stolen = _approver(reg, tmp_path, "stolen")
    compromised_since = utcnow() - timedelta(minutes=10)
    reg.keys.revoke(stolen.key_id, reason="leaked", compromised_since=compromised_since)
    name = fx.unique("backdated")
    version = fx.model(reg, name, tmp_path)  # registered after the compromise
    subject = f"models:/{name}/{version}"
    backdated = compromised_since - timedelta(hours=1)
    ((root,),) = _sql(
        reg,
        "SELECT manifest_root FROM artifacts WHERE kind = 'model' AND name = :n AND version = :v",
        n=name,
        v=version,
    )
    with reg.store.session() as session:
        event = reg.audit.append(
            session,
            actor="attacker",
            action="model.state",
            subject=subject,
            payload={"from": "registered", "to": "known-good", "reason": "x", "incident_id": None},
        )
        text, digest = sign_change(
            stolen,
            action="model.state",
            subject=subject,
            payload={"from": "registered", "to": "known-good", "reason": "x", "incident_id": None},
            digest=root,
            display_name="attacker",
            at=backdated,
            seq=event.seq,
        )
        session.add(
            Signature(
                subject=f"change:{subject}",
                manifest_root=digest,
                key_id=stolen.key_id,
                bundle=text,
                recorded_at=backdated,
            )
        )
    _sql(
        reg,
        "UPDATE artifact_states SET state = 'known-good' WHERE artifact_id ="
        " (SELECT id FROM artifacts WHERE kind = 'model' AND name = :n AND version = :v)",
        n=name,
        v=version,
    )
    reg.backend.set_alias(name, "production", version)
    decision = decide(reg, name, version, alias="production")
    assert not decision.allowed and decision.code == "tampered-state", decision.reason
    assert "newest signed state is registered" in decision.reason
    assert _cli("verify", f"models:/{name}@production").exit_code == 3

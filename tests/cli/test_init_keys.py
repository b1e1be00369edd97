"""`assay init` and `assay key ...` through the CLI: happy paths and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from assay.integrity.keys import PublicKey
from assay.registry.facade import Registry


def _keys(invoke) -> list[dict]:
    result = invoke("key", "list", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_commands_before_init_ask_for_init(invoke, assay_home: Path, tmp_path: Path, expect_error):
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w")
    for args in (
        ("verify", model),
        ("sign", model),
        ("key", "list"),
        ("audit", "verify"),
    ):
        expect_error(invoke(*args), 1, "run `assay init`")
    assert not assay_home.exists()
    assert sorted(p.name for p in model.iterdir()) == ["w.bin"]


def test_init_twice_is_idempotent(
    invoke, home: Path, audit_events_count, monkeypatch: pytest.MonkeyPatch
):
    # `home` is a copy of a real `assay init` (MLflow's schema left out, as here).
    monkeypatch.setattr(Registry, "_initialise_mlflow", lambda self: None)
    before = _keys(invoke)
    events = audit_events_count(home)
    result = invoke("init", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["created_key"] is None
    assert Path(data["home"]) == home.resolve()
    assert _keys(invoke) == before
    assert len(before) == 1 and before[0]["name"] == "default" and before[0]["has_private"]
    assert before[0]["key_type"] == "ecdsa-p256"
    assert audit_events_count(home) == events
    key_files = sorted(p.name for p in (home / "keys").iterdir())
    assert len([n for n in key_files if n.endswith(".key.pem")]) == 1
    assert os.stat(home / "keys").st_mode & 0o777 == 0o700
    private = next((home / "keys").glob("*.key.pem"))
    assert private.stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_full_init_twice(invoke, assay_home: Path, audit_events_count):
    """A real `assay init` (MLflow schema included), then again: one key, nothing new."""
    first = invoke("init", "--json")
    assert first.exit_code == 0, first.stderr
    created = json.loads(first.stdout)
    assert created["created_key"]["name"] == "default"
    assert created["tracking_uri"] and (assay_home / "mlflow.db").is_file()
    events = audit_events_count(assay_home)
    second = invoke("init", "--json")
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["created_key"] is None
    assert [k["key_id"] for k in _keys(invoke)] == [created["created_key"]["key_id"]]
    assert audit_events_count(assay_home) == events
    human = invoke("init")
    assert human.exit_code == 0 and "no key created" in human.stdout


def test_key_generate_list_export(invoke, home: Path, tmp_path: Path):
    result = invoke("key", "generate", "--type", "ed25519", "--name", "edkey", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["key_type"] == "ed25519" and record["status"] == "active"
    listed = {k["name"]: k for k in _keys(invoke)}
    assert set(listed) == {"default", "edkey"}
    assert listed["edkey"]["key_id"] == record["key_id"]

    exported = invoke("key", "export", "edkey")
    assert exported.exit_code == 0, exported.stderr
    assert PublicKey.from_pem(exported.stdout).key_id == record["key_id"]
    # by id prefix, to a file
    out = tmp_path / "ed.pub.pem"
    to_file = invoke("key", "export", record["key_id"][:12], "-o", out)
    assert to_file.exit_code == 0, to_file.stderr
    assert out.read_text() == exported.stdout
    # never overwrites
    again = invoke("key", "export", "edkey", "-o", out)
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert out.read_text() == exported.stdout
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    bad = invoke("key", "export", "edkey", "-o", blocker / "ed.pem")
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: cannot write") and len(bad.stderr.splitlines()) == 1


def test_key_trust_imports_public_key(invoke, home: Path, data_dir: Path):
    pem = data_dir / "oms" / "signing-key-pub.pem"
    result = invoke("key", "trust", pem, "--name", "oms", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["key_type"] == "ecdsa-p384" and not record["has_private"]
    assert record["key_id"] == PublicKey.from_pem(pem.read_text()).key_id
    # idempotent
    again = invoke("key", "trust", pem, "--name", "oms", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["key_id"] == record["key_id"]
    assert len(_keys(invoke)) == 2


def test_unknown_key_id(invoke, home: Path, snapshot, expect_error):
    before = snapshot(home)
    expect_error(invoke("key", "export", "deadbeefdeadbeef"), 1, "deadbeefdeadbeef")
    expect_error(
        invoke("key", "revoke", "deadbeefdeadbeef", "--reason", "x"), 1, "deadbeefdeadbeef"
    )
    assert snapshot(home) == before


def test_trust_rejects_bad_pem_and_private_keys(
    invoke, home: Path, tmp_path: Path, snapshot, expect_error
):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n")
    before = snapshot(home)
    result = invoke("key", "trust", bad, "--name", "bad")
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
    binary = tmp_path / "binary.pem"
    binary.write_bytes(b"\xff\xfe\x00\x01 not text")
    expect_error(invoke("key", "trust", binary, "--name", "bin"), 1, "binary.pem")
    private = next((home / "keys").glob("*.key.pem"))
    expect_error(invoke("key", "trust", private, "--name", "priv"), 1, "PUBLIC KEY")
    missing = invoke("key", "trust", tmp_path / "nope.pem", "--name", "x")
    assert missing.exit_code == 2  # click: the path must exist
    assert snapshot(home) == before


def test_revoke_rules(invoke, home: Path, snapshot, expect_error, audit_events_count):
    default = _keys(invoke)[0]["key_id"]
    before = snapshot(home)
    expect_error(
        invoke(
            "key", "revoke", default, "--reason", "x", "--compromised-since", "2999-01-01T00:00:00Z"
        ),
        1,
        "future",
    )
    bad_time = invoke("key", "revoke", default, "--reason", "x", "--compromised-since", "soon")
    assert bad_time.exit_code == 2 and "ISO 8601" in bad_time.stderr
    assert snapshot(home) == before

    first = invoke("key", "revoke", default, "--reason", "lost laptop", "--json")
    assert first.exit_code == 0, first.stderr
    revoked = json.loads(first.stdout)
    assert revoked["status"] == "revoked" and revoked["revoked_at"]
    events = audit_events_count(home)
    again = invoke("key", "revoke", default, "--reason", "lost laptop", "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["revoked_at"] == revoked["revoked_at"]
    assert audit_events_count(home) == events  # nothing changed, nothing recorded

    # a revoked key is never trusted again
    pem = home / "revoked.pem"
    pem.write_text(invoke("key", "export", default).stdout)
    expect_error(invoke("key", "trust", pem, "--name", "again"), 1, "revoked")


def test_generate_with_passphrase_encrypts_the_key(invoke, home: Path):
    result = invoke(
        "key", "generate", "--name", "locked", "--json", env={"ASSAY_KEY_PASSPHRASE": "a"}
    )
    assert result.exit_code == 0, result.stderr
    key_id = json.loads(result.stdout)["key_id"]
    data = (home / "keys" / f"{key_id}.key.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in data
    assert (home / "keys" / f"{key_id}.key.pem").stat().st_mode & 0o777 == 0o600


def test_generate_refuses_duplicate_name(invoke, home: Path, snapshot, expect_error):
    before = snapshot(home)
    expect_error(invoke("key", "generate", "--name", "default"), 1, "already exists")
    assert snapshot(home) == before


def test_trust_external_p256_key(invoke, home: Path, tmp_path: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "ext.pub.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    result = invoke("key", "trust", pem, "--name", "partner", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["key_type"] == "ecdsa-p256"


def test_the_hint_is_a_second_line_only_with_verbose(invoke, assay_home: Path, expect_error):
    expect_error(invoke("key", "list"), 1, "run `assay init`")
    verbose = invoke("--verbose", "key", "list")
    assert verbose.exit_code == 1
    lines = verbose.stderr.splitlines()
    error = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert "run `assay init`" in lines[error]
    assert lines[error + 1].startswith("hint: run `assay init`")

"""`assay sign` and `assay verify` through the CLI, on real files: happy paths and bad input.

Every bad input must give the right exit code (1 error, 2 usage, 3 integrity failure), one
``error: ...`` line on stderr, and leave the model, its signature and assay's store unchanged.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from assay.integrity import hashing
from assay.integrity.digest_cache import RACY_WINDOW_NS

GOLDEN = {
    # version: (target inside the case folder, extra verify args)
    "v1.0.0": ("signme-1", ["--signature", "{case}/model.sig"]),
    "v1.0.1": (".", ["--ignore-path", "ignore-me"]),
    "v1.1.0": (".", ["--ignore-path", "ignore-me"]),
}


def _sign(invoke, path: Path, *args: object, env=None) -> dict:
    result = invoke("sign", path, "--json", *args, env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _verify_ok(invoke, path: Path, *args: object) -> dict:
    result = invoke("verify", path, "--json", *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert report["ok"] is True
    return report


@pytest.fixture
def signed(invoke, home: Path, model_dir: Path) -> Path:
    """``model_dir`` signed with the default key (bundle at model_dir/model.sig)."""
    _sign(invoke, model_dir)
    assert (model_dir / "model.sig").is_file()
    return model_dir


@pytest.fixture
def golden(data_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the model_signing golden bundles."""
    dst = tmp_path / "oms"
    shutil.copytree(data_dir / "oms", dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def _golden_args(golden: Path, version: str) -> tuple[Path, list[str]]:
    case = golden / f"{version}-elliptic-key"
    target, extra = GOLDEN[version]
    return case / target, [a.format(case=case) for a in extra]


# -- happy paths ---------------------------------------------------------------------------------


def test_sign_then_verify(invoke, home: Path, model_dir: Path):
    signed = _sign(invoke, model_dir)
    assert signed["files"] == 4  # the empty file is covered
    assert Path(signed["signature_path"]) == model_dir / "model.sig"
    report = _verify_ok(invoke, model_dir)
    assert report["files"] == 4 and report["key_name"] == "default"
    assert report["root_digest"] == signed["root_digest"]
    human = invoke("verify", model_dir)
    assert human.exit_code == 0 and "OK" in human.stdout and human.stderr == ""


def test_sign_single_file_and_custom_signature_path(invoke, home: Path, tmp_path: Path):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00" * 4096)
    signed = _sign(invoke, weights)
    assert Path(signed["signature_path"]) == tmp_path / "weights.bin.sig"
    _verify_ok(invoke, weights)
    elsewhere = tmp_path / "sigs" / "w.sig"
    _sign(invoke, weights, "--signature", elsewhere)
    _verify_ok(invoke, weights, "--signature", elsewhere)


@pytest.mark.parametrize("version", sorted(GOLDEN))
def test_golden_bundles_verify_once_key_trusted(invoke, home: Path, golden: Path, version: str):
    target, extra = _golden_args(golden, version)
    trust = invoke("key", "trust", golden / "signing-key-pub.pem", "--name", "oms")
    assert trust.exit_code == 0, trust.stderr
    report = _verify_ok(invoke, target, *extra)
    assert report["key_name"] == "oms" and report["signature_ok"]


def test_golden_ignore_paths(invoke, home: Path, golden: Path, expect_error):
    """v1.1.0 records its ignored paths in the bundle; v1.0.1 needs them on the command line."""
    invoke("key", "trust", golden / "signing-key-pub.pem", "--name", "oms")
    _verify_ok(invoke, golden / "v1.1.0-elliptic-key")
    expect_error(invoke("verify", golden / "v1.0.1-elliptic-key"), 3, "1 extra (ignore-me)")


@pytest.mark.parametrize("version", sorted(GOLDEN))
def test_golden_flipped_byte_fails(invoke, home: Path, golden: Path, version: str, expect_error):
    target, extra = _golden_args(golden, version)
    invoke("key", "trust", golden / "signing-key-pub.pem", "--name", "oms")
    victim = target if target.is_file() else target / "signme-2"
    data = bytearray(victim.read_bytes())
    data[0] ^= 0x01
    victim.write_bytes(bytes(data))
    result = invoke("verify", target, *extra)
    expect_error(result, 3, "1 modified")
    name = "." if target.is_file() else "signme-2"
    assert f"modified  {name}" in " ".join(result.stdout.split("\n"))


def test_ci_key_is_never_trusted_on_first_use(
    invoke, home: Path, model_dir: Path, tmp_path: Path, audit_events_count, snapshot
):
    """An unknown ASSAY_KEY cannot sign (one line saying how to get it trusted) until the admin
    trusts its public key with a role; then it signs and verifies."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "ci-key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = tmp_path / "ci-key.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    events = audit_events_count(home)
    before = snapshot(home, model_dir)
    refused = invoke("sign", model_dir, env={"ASSAY_KEY": str(pem)})
    assert refused.exit_code == 1
    assert "is not trusted by this store" in refused.stderr
    assert "assay key trust" in refused.stderr and refused.stderr.count("\n") == 1
    assert audit_events_count(home) == events and snapshot(home, model_dir) == before
    # the CI key cannot trust itself either: trust changes need the admin key
    self_trust = invoke(
        "key", "trust", public, "--name", "ci", "--role", "signer", env={"ASSAY_KEY": str(pem)}
    )
    assert self_trust.exit_code == 1 and "admin" in self_trust.stderr

    trusted = invoke("key", "trust", public, "--name", "ci", "--role", "signer", "--json")
    assert trusted.exit_code == 0, trusted.stderr
    assert json.loads(trusted.stdout)["roles"] == ["signer"]
    signed = _sign(invoke, model_dir, env={"ASSAY_KEY": str(pem)})
    keys = {k["key_id"]: k for k in json.loads(invoke("key", "list", "--json").stdout)}
    assert keys[signed["key_id"]]["name"] == "ci" and keys[signed["key_id"]]["trusted"]
    report = _verify_ok(invoke, model_dir)
    assert report["key_id"] == signed["key_id"]
    # PEM text in ASSAY_KEY works too, and the key is not recorded twice
    _sign(invoke, model_dir, env={"ASSAY_KEY": pem.read_text()})
    assert len(json.loads(invoke("key", "list", "--json").stdout)) == 2


def test_trust_row_written_into_the_database_grants_nothing(
    invoke, home: Path, model_dir: Path, tmp_path: Path
):
    """An attacker with database access inserts a key row: the signed trust list decides."""
    import sqlite3

    from assay.integrity.keys import generate_key

    attacker = generate_key("ecdsa-p256")
    pem = tmp_path / "attacker.pem"
    pem.write_bytes(attacker.private_pem(None))
    with sqlite3.connect(home / "assay.db") as conn:
        conn.execute(
            "INSERT INTO keys (key_id, name, key_type, public_pem, has_private, source, created_at)"
            " VALUES (?, 'evil', 'ecdsa-p256', ?, 0, 'imported', '2026-01-01 00:00:00')",
            (attacker.key_id, attacker.public_key.pem),
        )
    conn.close()
    refused = invoke("sign", model_dir, env={"ASSAY_KEY": str(pem)})
    assert refused.exit_code == 1 and "not trusted" in refused.stderr
    listed = {k["key_id"]: k for k in json.loads(invoke("key", "list", "--json").stdout)}
    assert listed[attacker.key_id]["trusted"] is False
    # a forged trust-list row (signed by the attacker) breaks the chain: assay trusts nothing
    from assay.trust.trust_list import TRUST_SUBJECT, TrustEntry, TrustList

    entry = TrustEntry(attacker.key_id, "evil", "ecdsa-p256", attacker.public_key.pem, ("admin",))
    forged = TrustList(2, {attacker.key_id: entry}, None).sign(attacker, datetime.now(timezone.utc))
    with sqlite3.connect(home / "assay.db") as conn:
        conn.execute(
            "INSERT INTO signatures (artifact_id, subject, manifest_root, key_id, bundle,"
            " recorded_at) VALUES (NULL, ?, ?, ?, ?, '2026-01-01 00:00:00')",
            (TRUST_SUBJECT, "f" * 64, attacker.key_id, forged),
        )
    conn.close()
    result = invoke("sign", model_dir, env={"ASSAY_KEY": str(pem)})
    assert result.exit_code == 3 and "not signed by an admin key" in result.stderr


def test_reuse_digests_same_root_and_rehashes_changes(
    invoke, home: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    hashed: list[str] = []
    printed: list[str] = []  # fingerprints re-read: a changed file's bytes may be unchanged
    real = hashing._hash_span

    def counting(span, algorithm, *args, **kwargs):
        if model_dir in span.path.parents:  # not another test's leftover background hashing
            seen = printed if algorithm == hashing.FINGERPRINT else hashed
            seen.append(span.path.name)
        return real(span, algorithm, *args, **kwargs)

    monkeypatch.setattr(hashing, "_hash_span", counting)
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.05)  # files this fresh are never cached

    full = _sign(invoke, model_dir)
    assert len(hashed) == 4
    hashed.clear()
    first = _sign(invoke, model_dir, "--reuse-digests")  # fills the cache
    assert first["root_digest"] == full["root_digest"]
    hashed.clear()
    second = _sign(invoke, model_dir, "--reuse-digests")
    assert second["root_digest"] == full["root_digest"]
    assert hashed == []  # everything came from the cache

    weights = model_dir / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF  # same size, new content
    weights.write_bytes(bytes(data))
    changed = _sign(invoke, model_dir, "--reuse-digests")
    assert hashed == ["weights.bin"] and printed == ["weights.bin"]
    assert changed["root_digest"] != full["root_digest"]
    hashed.clear()
    assert _sign(invoke, model_dir)["root_digest"] == changed["root_digest"]
    _verify_ok(invoke, model_dir)


def test_resign_of_a_sharded_file_rehashes_only_the_changed_shard(
    invoke, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    model = tmp_path / "sharded"
    model.mkdir()
    (model / "weights.bin").write_bytes(os.urandom(40_000))
    spans: list[tuple[str, int]] = []
    real = hashing._hash_span

    def counting(span, algorithm, *args, **kwargs):
        if model in span.path.parents and algorithm != hashing.FINGERPRINT:
            spans.append((span.path.name, span.start))
        return real(span, algorithm, *args, **kwargs)

    monkeypatch.setattr(hashing, "_hash_span", counting)
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.05)
    _sign(invoke, model, "--reuse-digests", "--shard-size", "4096")
    assert len(spans) == 10
    with open(model / "weights.bin", "r+b") as fh:  # 1 KB written inside shard 12288:16384
        fh.seek(13_000)
        fh.write(os.urandom(1024))
    spans.clear()
    changed = _sign(invoke, model, "--reuse-digests", "--shard-size", "4096")
    assert spans == [("weights.bin", 12_288)]
    assert changed["root_digest"] == _sign(invoke, model, "--shard-size", "4096")["root_digest"]
    _verify_ok(invoke, model)


def test_trust_cache_verify(invoke, home: Path, model_dir: Path, monkeypatch, expect_error):
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.05)
    _sign(invoke, model_dir, "--reuse-digests")
    hashed: list[str] = []
    real = hashing._hash_span

    def counting(span, *args, **kwargs):
        if model_dir in span.path.parents:  # not another test's leftover background hashing
            hashed.append(span.path.name)
        return real(span, *args, **kwargs)

    monkeypatch.setattr(hashing, "_hash_span", counting)
    _verify_ok(invoke, model_dir, "--trust-cache")
    assert hashed == []
    _verify_ok(invoke, model_dir)  # plain verify always re-hashes
    assert len(hashed) == 4
    hashed.clear()
    (model_dir / "extra.bin").write_bytes(b"\x09" * 3000)  # same size, new bytes
    expect_error(invoke("verify", model_dir, "--trust-cache"), 3, "modified (extra.bin)")
    assert hashed == ["extra.bin"]


# -- bad input: verification failures (exit 3) ---------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    ["corrupt", "truncated", "empty", "not-a-bundle", "bad-signature"],
)
def test_damaged_bundle(invoke, home: Path, signed: Path, snapshot, expect_error, damage: str):
    sig = signed / "model.sig"
    text = sig.read_text()
    if damage == "corrupt":
        sig.write_text(text.replace("{", "[", 1))
    elif damage == "truncated":
        sig.write_text(text[: len(text) // 2])
    elif damage == "empty":
        sig.write_text("")
    elif damage == "not-a-bundle":
        sig.write_text(json.dumps({"hello": "world"}))
    else:
        bundle = json.loads(text)
        sig_b64 = bundle["dsseEnvelope"]["signatures"][0]["sig"]
        flipped = ("A" if sig_b64[10] != "A" else "B").join((sig_b64[:10], sig_b64[11:]))
        bundle["dsseEnvelope"]["signatures"][0]["sig"] = flipped
        sig.write_text(json.dumps(bundle))
    before = snapshot(home, signed)
    result = invoke("verify", signed)
    line = expect_error(result, 3)
    assert "signature" in line or "bundle" in line, line
    assert snapshot(home, signed) == before


def test_json_output_on_failure(invoke, home: Path, signed: Path):
    (signed / "weights.bin").write_bytes(b"tampered")
    result = invoke("verify", signed, "--json")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["signature_ok"] is True
    assert report["modified"] == ["weights.bin"]
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


def test_bundle_for_another_model(invoke, home: Path, signed: Path, tmp_path: Path, snapshot):
    other = tmp_path / "other"
    other.mkdir()
    (other / "weights.bin").write_bytes(b"other weights")
    (other / "tokenizer.json").write_text("{}")
    shutil.copy(signed / "model.sig", other / "model.sig")
    before = snapshot(home, other, signed)
    result = invoke("verify", other, "--json")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["signature_ok"] and not report["ok"]
    assert report["modified"] == ["weights.bin"]
    assert report["missing"] == ["empty.txt", "extra.bin", "sub/config.json"]
    assert report["extra"] == ["tokenizer.json"]
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line
    assert "1 modified (weights.bin)" in line and "3 missing" in line and "1 extra" in line
    # the same through --signature pointing at the other model's bundle
    result = invoke("verify", other, "--signature", signed / "model.sig")
    assert result.exit_code == 3
    assert snapshot(home, other, signed) == before


def test_wrong_key(invoke, home: Path, golden: Path, snapshot, expect_error):
    """A genuine model_signing bundle, but by a key this store does not trust."""
    target, extra = _golden_args(golden, "v1.1.0")
    before = snapshot(home, golden)
    expect_error(invoke("verify", target, *extra), 3, "does not trust")
    assert snapshot(home, golden) == before


def test_wrong_key_from_another_assay_home(
    invoke, home: Path, signed: Path, tmp_path: Path, template_home: Path, snapshot, expect_error
):
    other_home = tmp_path / "other-home"
    shutil.copytree(template_home, other_home)
    other_env = {"ASSAY_HOME": str(other_home)}
    key = json.loads(invoke("key", "generate", "--name", "x", "--json", env=other_env).stdout)
    model = tmp_path / "m2"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w" * 10)
    assert invoke("sign", model, "--key", key["key_id"], env=other_env).exit_code == 0
    before = snapshot(home, model)
    expect_error(invoke("verify", model), 3, "does not trust")
    assert snapshot(home, model) == before


@pytest.mark.parametrize("offset", [0, 1000, -1])
def test_one_flipped_byte(invoke, home: Path, signed: Path, snapshot, expect_error, offset: int):
    weights = signed / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[offset] ^= 0x01
    weights.write_bytes(bytes(data))
    before = snapshot(home, signed)
    result = invoke("verify", signed)
    expect_error(result, 3, "1 modified (weights.bin)")
    assert "modified  weights.bin" in result.stdout
    assert snapshot(home, signed) == before


def test_missing_file(invoke, home: Path, signed: Path, snapshot, expect_error):
    (signed / "sub" / "config.json").unlink()
    before = snapshot(home, signed)
    expect_error(invoke("verify", signed), 3, "1 missing (sub/config.json)")
    assert snapshot(home, signed) == before


def test_deleted_empty_file(invoke, home: Path, signed: Path, snapshot, expect_error):
    (signed / "empty.txt").unlink()
    before = snapshot(home, signed)
    expect_error(invoke("verify", signed), 3, "1 missing (empty.txt)")
    assert snapshot(home, signed) == before


def test_extra_file(invoke, home: Path, signed: Path, snapshot, expect_error):
    (signed / "sub" / "backdoor.py").write_text("import os\n")
    before = snapshot(home, signed)
    expect_error(invoke("verify", signed), 3, "1 extra (sub/backdoor.py)")
    assert snapshot(home, signed) == before


def test_extra_empty_file(invoke, home: Path, signed: Path, expect_error):
    (signed / "new-empty").write_bytes(b"")
    expect_error(invoke("verify", signed), 3, "1 extra (new-empty)")


def test_unsigned_path(invoke, home: Path, model_dir: Path, snapshot, expect_error):
    before = snapshot(home, model_dir)
    expect_error(invoke("verify", model_dir), 3, "not signed")
    assert snapshot(home, model_dir) == before


# -- bad input: errors (exit 1) and usage (exit 2) -----------------------------------------------


def test_missing_path(invoke, home: Path, tmp_path: Path, snapshot, expect_error):
    work = tmp_path / "work"
    work.mkdir()
    before = snapshot(home, work)
    expect_error(invoke("verify", work / "nope"), 1, "does not exist")
    usage = invoke("sign", work / "nope")
    assert usage.exit_code == 2 and "does not exist" in usage.stderr
    assert snapshot(home, work) == before


def test_unknown_option_is_usage_error(invoke, home: Path, model_dir: Path):
    result = invoke("verify", model_dir, "--no-such-option")
    assert result.exit_code == 2
    assert "No such option" in result.stderr


def test_symlink_escaping_root_is_refused(
    invoke, home: Path, signed: Path, tmp_path: Path, snapshot, expect_error
):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the model\n")
    os.symlink(secret, signed / "sub" / "escape")
    os.symlink("../../secret.txt", signed / "relative-escape")
    before = snapshot(home, signed)
    expect_error(invoke("sign", signed), 1, "symbolic link")
    expect_error(invoke("verify", signed), 1, "symbolic link")
    assert snapshot(home, signed) == before
    # the error class is UnsafeInputError (shown by --verbose's traceback)
    verbose = invoke("-v", "sign", signed)
    assert verbose.exit_code == 1 and "UnsafeInputError" in verbose.stderr
    assert snapshot(home, signed) == before


def test_symlinked_model_root_is_refused(invoke, home: Path, signed: Path, tmp_path: Path):
    link = tmp_path / "model-link"
    os.symlink(signed, link)
    result = invoke("sign", link)
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
    assert "symbolic link" in result.stderr


@pytest.fixture
def unreadable(monkeypatch: pytest.MonkeyPatch):
    """``unreadable(path)``: opening ``path`` fails with EACCES, as for a mode-000 file.

    chmod 000 does not stop root, so the denial is simulated at ``os.open`` (what the hasher
    calls); the file is also really chmod-ed to 000.
    """
    real_open = os.open
    denied: set[str] = set()

    def fake_open(path, flags, *args, **kwargs):
        if os.path.abspath(os.fspath(path)) in denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)

    def make(path: Path) -> Path:
        denied.add(os.path.abspath(path))
        path.chmod(0o000)
        return path

    yield make
    for path in denied:
        Path(path).chmod(0o644)


def test_unreadable_file(invoke, home: Path, signed: Path, snapshot, expect_error, unreadable):
    unreadable(signed / "extra.bin")
    before = snapshot(home, signed)
    expect_error(invoke("sign", signed), 1, "cannot read", "extra.bin", "Permission denied")
    expect_error(invoke("verify", signed), 1, "cannot read", "extra.bin", "Permission denied")
    assert snapshot(home, signed) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files")
def test_really_unreadable_file(invoke, home: Path, signed: Path, snapshot, expect_error):
    victim = signed / "extra.bin"
    victim.chmod(0o000)
    try:
        before = snapshot(home, signed)
        expect_error(invoke("sign", signed), 1, "cannot read", "extra.bin")
        expect_error(invoke("verify", signed), 1, "cannot read", "extra.bin")
        assert snapshot(home, signed) == before
    finally:
        victim.chmod(0o644)


def test_undecodable_signature(invoke, home: Path, signed: Path, snapshot, expect_error):
    (signed / "model.sig").write_bytes(b"\xff\xfe\x00garbage")
    before = snapshot(home, signed)
    expect_error(invoke("verify", signed), 3, "cannot read signature")
    assert snapshot(home, signed) == before


def test_wrong_passphrase(invoke, home: Path, model_dir: Path, snapshot, expect_error):
    made = invoke("key", "generate", "--name", "locked", env={"ASSAY_KEY_PASSPHRASE": "a"})
    assert made.exit_code == 0, made.stderr
    before = snapshot(home, model_dir)
    line = expect_error(
        invoke("sign", model_dir, "--key", "locked", env={"ASSAY_KEY_PASSPHRASE": "b"}),
        1,
        "wrong passphrase",
    )
    assert "Traceback" not in line
    expect_error(invoke("sign", model_dir, "--key", "locked"), 1, "ASSAY_KEY_PASSPHRASE")
    assert snapshot(home, model_dir) == before
    # the right passphrase signs
    ok = invoke("sign", model_dir, "--key", "locked", env={"ASSAY_KEY_PASSPHRASE": "a"})
    assert ok.exit_code == 0, ok.stderr


def test_unknown_signing_key(invoke, home: Path, model_dir: Path, snapshot, expect_error):
    before = snapshot(home, model_dir)
    expect_error(invoke("sign", model_dir, "--key", "deadbeefdeadbeef"), 1, "deadbeefdeadbeef")
    assert snapshot(home, model_dir) == before


def test_bad_assay_key_env(invoke, home: Path, model_dir: Path, snapshot, expect_error):
    before = snapshot(home, model_dir)
    expect_error(
        invoke("sign", model_dir, env={"ASSAY_KEY": str(model_dir / "no-such.pem")}),
        1,
        "ASSAY_KEY",
    )
    expect_error(
        invoke("sign", model_dir, env={"ASSAY_KEY": "-----BEGIN PRIVATE KEY-----\nxx\n"}), 1
    )
    assert snapshot(home, model_dir) == before


# -- revocation ----------------------------------------------------------------------------------


def test_revoked_key(invoke, home: Path, signed: Path, snapshot, expect_error, audit_events_count):
    key_id = json.loads(invoke("key", "list", "--json").stdout)[0]["key_id"]
    sig_before = (signed / "model.sig").read_bytes()
    revoked = invoke("key", "revoke", key_id, "--reason", "rotated")
    assert revoked.exit_code == 0, revoked.stderr
    # recorded before the revocation: still verifies
    _verify_ok(invoke, signed)

    # signing with a revoked key is refused, nothing written
    before = snapshot(home, signed)
    expect_error(invoke("sign", signed), 1, "revoked", "refusing to sign")
    expect_error(invoke("audit", "checkpoint"), 1, "revoked")
    assert snapshot(home, signed) == before

    # compromised after the signature was recorded: it still verifies
    now = datetime.now(timezone.utc).isoformat()
    result = invoke("key", "revoke", key_id, "--reason", "stolen", "--compromised-since", now)
    assert result.exit_code == 0, result.stderr
    _verify_ok(invoke, signed)

    # compromised (just) before the signature was recorded: it stops verifying
    recorded = json.loads(invoke("audit", "log", "--json").stdout)
    sign_event = next(e for e in recorded if e["action"] == "sign")
    assert sign_event["payload"]["key_id"] == key_id
    before_signing = datetime.fromisoformat(sign_event["ts"]) - timedelta(seconds=1)
    result = invoke(
        "key",
        "revoke",
        key_id,
        "--reason",
        "stolen",
        "--compromised-since",
        before_signing.isoformat(),
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(invoke("key", "list", "--json").stdout)[0]["status"] == "compromised"
    events = audit_events_count(home)
    before = snapshot(home, signed)
    failed = invoke("verify", signed, "--json")
    assert failed.exit_code == 3
    report = json.loads(failed.stdout)
    assert report["ok"] is False and report["signature_ok"] is True
    assert any("compromised since" in p for p in report["problems"])
    assert failed.stderr.startswith("error: ") and "compromised since" in failed.stderr
    assert snapshot(home, signed) == before
    assert audit_events_count(home) == events
    assert (signed / "model.sig").read_bytes() == sig_before


def test_revoked_key_unrecorded_signature_fails(
    invoke, home: Path, signed: Path, tmp_path: Path, template_home: Path, expect_error
):
    """A bundle by a revoked key that this store never recorded cannot predate the revocation."""
    other_home = tmp_path / "other-home"
    shutil.copytree(template_home, other_home)  # same default key, separate store
    key_id = json.loads(invoke("key", "list", "--json").stdout)[0]["key_id"]
    model = tmp_path / "m2"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w")
    assert invoke("sign", model, env={"ASSAY_HOME": str(other_home)}).exit_code == 0
    _verify_ok(invoke, model)  # trusted key, not revoked: fine although unrecorded
    assert invoke("key", "revoke", key_id, "--reason", "rotated").exit_code == 0
    expect_error(invoke("verify", model), 3, "never recorded")
    _verify_ok(invoke, signed)  # the recorded one still verifies


def test_unwritable_signature_destination_records_nothing(
    invoke, home: Path, model_dir: Path, tmp_path: Path, snapshot, expect_error
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be\n")
    before = snapshot(home, model_dir, blocker)
    expect_error(invoke("sign", model_dir, "--signature", blocker / "model.sig"), 1, "cannot write")
    assert snapshot(home, model_dir, blocker) == before


def test_resign_replaces_bundle_and_leaves_no_temp_files(invoke, home: Path, signed: Path):
    first = (signed / "model.sig").read_text()
    (signed / "weights.bin").write_bytes(b"retrained")
    _sign(invoke, signed)
    assert (signed / "model.sig").read_text() != first
    assert not [p for p in signed.iterdir() if p.name.endswith(".tmp")]
    _verify_ok(invoke, signed)


@pytest.mark.parametrize("damage", ["unsigned", "corrupt"])
def test_json_report_when_bundle_unusable(invoke, home: Path, model_dir: Path, damage: str):
    if damage == "corrupt":
        (model_dir / "model.sig").write_text('{"mediaType": ')
    result = invoke("verify", model_dir, "--json")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["subject"] == str(model_dir)
    assert len(report["problems"]) == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert report["problems"][0] in result.stderr

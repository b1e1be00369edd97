"""OMS bundles assay makes: round trip and every way verification must fail."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from assay.core.errors import AssayError, IntegrityError, UnsafeInputError
from assay.integrity.digest_cache import DigestCache
from assay.integrity.keys import generate_key
from assay.integrity.manifest import build_manifest
from assay.integrity.oms import (
    BUNDLE_MEDIA_TYPE,
    InvalidBundleError,
    UnsupportedBundleError,
    VerificationFailedError,
    pae,
    parse_bundle,
    sign_manifest,
    verify_bundle,
)


@pytest.fixture
def key():
    return generate_key("ecdsa-p256")


@pytest.fixture
def model(tmp_path) -> Path:
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(os.urandom(50_000))
    (root / "config.json").write_text('{"layers": 2}')
    (root / "sub" / "empty").write_bytes(b"")
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
        for p in sorted(root.rglob("*"))
    }


def _signed(model: Path, key) -> str:
    return sign_manifest(build_manifest(model), key)


def _expect_failure(model, bundle, key, match):
    before = _tree(model.parent)
    result = verify_bundle(model, bundle, key.public_key)
    assert not result.ok
    with pytest.raises(VerificationFailedError, match=match) as info:
        result.raise_for_failure()
    assert info.value.exit_code == 3
    assert "\n" not in str(info.value)
    assert _tree(model.parent) == before
    return result


def test_round_trip(model, key):
    text = _signed(model, key)
    doc = json.loads(text)
    assert doc["mediaType"] == BUNDLE_MEDIA_TYPE
    assert doc["verificationMaterial"]["publicKey"]["hint"] == key.public_key.oms_hint
    env = doc["dsseEnvelope"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(env["payload"]))
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert statement["subject"][0]["name"] == "model"
    names = [r["name"] for r in statement["predicate"]["resources"]]
    assert names == ["config.json", "sub/empty", "weights.bin"]
    sig = base64.b64decode(env["signatures"][0]["sig"])
    assert key.public_key.verify(sig, pae(base64.b64decode(env["payload"])))

    result = verify_bundle(model, text, key.public_key)
    assert result.ok and result.signature_ok and result.files_checked == 3
    assert result.root_digest == build_manifest(model).root_digest
    assert result.to_dict()["ok"] is True
    result.raise_for_failure()


def test_round_trip_ed25519_and_single_file(model):
    key = generate_key("ed25519")
    text = sign_manifest(build_manifest(model / "weights.bin"), key)
    assert verify_bundle(model / "weights.bin", text, key.public_key).ok


def test_parse_bundle_fields(model, key):
    b = parse_bundle(_signed(model, key))
    assert b.model_name == "model"
    assert [r.name for r in b.resources] == ["config.json", "sub/empty", "weights.bin"]
    assert b.serialization.method == "files" and "model.sig" in b.serialization.ignore_paths
    assert b.key_hint == key.public_key.oms_hint and b.hint_matches(key.public_key)
    assert b.manifest.root_digest == b.root_digest


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[: len(t) // 2],
        lambda t: "",
        lambda t: "[]",
        lambda t: t.replace(BUNDLE_MEDIA_TYPE, "application/json"),
        lambda t: t.replace('"payload": "', '"payload": "!!'),
        lambda t: json.dumps({k: v for k, v in json.loads(t).items() if k != "dsseEnvelope"}),
    ],
    ids=["truncated", "empty", "not-object", "media-type", "bad-base64", "missing-envelope"],
)
def test_corrupt_bundle(model, key, mangle):
    text = mangle(_signed(model, key))
    with pytest.raises(InvalidBundleError) as info:
        verify_bundle(model, text, key.public_key)
    assert info.value.exit_code == 3 and "\n" not in str(info.value)


def _edit_statement(text: str, edit) -> str:
    doc = json.loads(text)
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    edit(statement)
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(doc)


def test_edited_resource_list_is_inconsistent(model, key):
    text = _edit_statement(_signed(model, key), lambda s: s["predicate"]["resources"].pop())
    with pytest.raises(InvalidBundleError, match="subject digest does not match"):
        parse_bundle(text)


def test_edited_payload_fails_signature(model, key):
    def drop_weights(s):
        s["predicate"]["resources"] = s["predicate"]["resources"][:1]
        from assay.integrity.manifest import ResourceDigest, compute_root_digest

        r = s["predicate"]["resources"][0]
        s["subject"][0]["digest"]["sha256"] = compute_root_digest(
            [ResourceDigest(r["name"], r["digest"])]
        )

    text = _edit_statement(_signed(model, key), drop_weights)
    _expect_failure(model, text, key, "signature does not verify")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["predicate"]["serialization"].update(method="tensors"), "method 'tensors'"),
        (lambda s: s["predicate"]["serialization"].update(hash_type="md5"), "hash type 'md5'"),
        (lambda s: s.update(predicateType="https://example/x"), "predicate type"),
    ],
)
def test_unsupported_serialization(model, key, edit, message):
    text = _edit_statement(_signed(model, key), edit)
    with pytest.raises(UnsupportedBundleError, match=message):
        parse_bundle(text)


@pytest.mark.parametrize(
    "edit, message",
    [
        # files mode relabelled as another hash: the resources still say sha256
        (
            lambda s: s["predicate"]["serialization"].update(hash_type="blake3"),
            "mode mismatch.*'sha256'.*needs 'blake3'",
        ),
        # shards declared over file resources
        (
            lambda s: s["predicate"]["serialization"].update(method="shards"),
            "has no shard_size",
        ),
        (
            lambda s: s["predicate"]["serialization"].update(method="shards", shard_size=0),
            "shard_size 0 is not between 1",
        ),
        (
            lambda s: s["predicate"]["serialization"].update(method="shards", shard_size=1.5),
            "shard_size is not an integer",
        ),
        (
            lambda s: s["predicate"]["serialization"].update(method="shards", shard_size=True),
            "shard_size is not an integer",
        ),
        (
            lambda s: s["predicate"]["serialization"].update(method="shards", shard_size=1000),
            "mode mismatch.*needs 'sha256-sharded-1000'",
        ),
    ],
)
def test_mode_mismatch_is_a_corrupt_bundle(model, key, edit, message):
    text = _edit_statement(_signed(model, key), edit)
    with pytest.raises(InvalidBundleError, match=message):
        parse_bundle(text)


def test_bundle_for_another_model(model, key, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "weights.bin").write_bytes(b"different")
    text = _signed(other, key)
    r = _expect_failure(model, text, key, r"1 modified \(weights.bin\), 2 extra")
    assert r.extra == ["config.json", "sub/empty"]


def test_wrong_key(model, key):
    text = _signed(model, key)
    r = _expect_failure(model, text, generate_key(), "signed by a different key")
    assert r.signature_ok is False


def test_flipped_byte(model, key):
    text = _signed(model, key)
    data = bytearray((model / "weights.bin").read_bytes())
    data[12345] ^= 0x01
    (model / "weights.bin").write_bytes(bytes(data))
    r = _expect_failure(
        model, text, key, r"^verification failed for .*: 1 modified \(weights.bin\)$"
    )
    assert r.modified == ["weights.bin"] and r.signature_ok


def test_flipped_signature_byte(model, key):
    doc = json.loads(_signed(model, key))
    sig = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 0x01
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    _expect_failure(model, json.dumps(doc), key, "signature does not verify")


def test_missing_file(model, key):
    text = _signed(model, key)
    (model / "config.json").unlink()
    r = _expect_failure(model, text, key, r"1 missing \(config.json\)")
    assert r.missing == ["config.json"]


def test_deleted_empty_file(model, key):
    text = _signed(model, key)
    (model / "sub" / "empty").unlink()
    _expect_failure(model, text, key, r"1 missing \(sub/empty\)")


def test_extra_file(model, key):
    text = _signed(model, key)
    (model / "backdoor.py").write_text("import os")
    r = _expect_failure(model, text, key, r"1 extra \(backdoor.py\)")
    assert r.extra == ["backdoor.py"]


def test_summary_mixes_kinds(model, key):
    text = _signed(model, key)
    (model / "weights.bin").write_bytes(b"x")
    (model / "config.json").unlink()
    _expect_failure(
        model,
        text,
        key,
        r"verification failed for .*model: 1 modified \(weights.bin\), "
        r"1 missing \(config.json\)$",
    )


def test_symlink_escaping_root(model, key, tmp_path):
    text = _signed(model, key)
    (tmp_path / "secret").write_text("s")
    (model / "escape").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafeInputError, match="escape") as info:
        verify_bundle(model, text, key.public_key)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read mode-000 files")
def test_unreadable_file(model, key):
    text = _signed(model, key)
    (model / "config.json").chmod(0)
    try:
        with pytest.raises(AssayError, match="cannot read .*config.json"):
            verify_bundle(model, text, key.public_key)
    finally:
        (model / "config.json").chmod(0o600)


def test_unreadable_file_simulated(model, key, monkeypatch):
    """Same as above, but works as root: the open fails with EACCES."""
    from assay.integrity import hashing

    text = _signed(model, key)
    real_open = os.open

    def fake_open(path, flags, *a, **kw):
        if str(path).endswith("config.json"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(hashing.os, "open", fake_open)
    with pytest.raises(AssayError, match="cannot read .*config.json: Permission denied"):
        verify_bundle(model, text, key.public_key)


def test_trust_cache_only_when_asked(model, key, tmp_path, monkeypatch):
    from assay.integrity import digest_cache

    monkeypatch.setattr(digest_cache, "RACY_WINDOW_NS", 0)
    cache = DigestCache(tmp_path / "cache.json")
    text = sign_manifest(build_manifest(model, cache=cache), key)
    # Poison the cache: a stale digest for weights.bin under the current stamps.
    st = os.stat(model / "weights.bin")
    cache.store(model / "weights.bin", st, "00" * 32)
    cache.save()
    assert verify_bundle(model, text, key.public_key, cache=DigestCache(cache.path)).ok
    trusted = verify_bundle(
        model, text, key.public_key, cache=DigestCache(cache.path), trust_cache=True
    )
    assert trusted.modified == ["weights.bin"]


def test_errors_are_integrity_errors():
    assert issubclass(InvalidBundleError, IntegrityError)
    assert issubclass(VerificationFailedError, IntegrityError)

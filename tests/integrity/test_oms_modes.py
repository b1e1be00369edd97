"""Every OMS mode (files/shards x sha256/blake2b/blake3): sign, verify, tamper, bad bundles."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from assay.core.errors import IntegrityError
from assay.integrity import hashing
from assay.integrity.digest_cache import RACY_WINDOW_NS, DigestCache
from assay.integrity.hashing import Span, TruncatedError, hash_spans
from assay.integrity.keys import generate_key
from assay.integrity.manifest import build_manifest
from assay.integrity.oms import InvalidBundleError, parse_bundle, sign_manifest, verify_bundle

MODES = [
    ("sha256", None),
    ("blake2b", None),
    ("blake3", None),
    ("sha256", 1000),
    ("blake2b", 1000),
    ("blake3", 1000),  # assay verifies it; `assay sign` refuses to write it
]


@pytest.fixture
def key():
    return generate_key("ecdsa-p256")


@pytest.fixture
def model(tmp_path) -> Path:
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(os.urandom(2500))
    (root / "exact.bin").write_bytes(os.urandom(2000))  # a multiple of the shard size
    (root / "config.json").write_text('{"layers": 2}')
    (root / "sub" / "empty").write_bytes(b"")
    return root


def _statement(bundle: str) -> dict:
    doc = json.loads(bundle)
    return json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))


def _resign(bundle: str, key, edit) -> str:
    """Apply ``edit`` to the statement and sign it again (a well-signed, hostile bundle)."""
    from assay.integrity.oms import pae

    doc = json.loads(bundle)
    statement = _statement(bundle)
    edit(statement)
    payload = json.dumps(statement).encode()
    doc["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    doc["dsseEnvelope"]["signatures"] = [
        {"sig": base64.b64encode(key.sign(pae(payload))).decode(), "keyid": ""}
    ]
    return json.dumps(doc)


@pytest.mark.parametrize("hash_type, shard_size", MODES)
def test_every_mode_round_trips_and_catches_a_flipped_byte(model, key, hash_type, shard_size):
    manifest = build_manifest(model, hash_type=hash_type, shard_size=shard_size)
    bundle = sign_manifest(manifest, key)
    statement = _statement(bundle)
    ser = statement["predicate"]["serialization"]
    assert ser["hash_type"] == hash_type
    assert ser["method"] == ("files" if shard_size is None else "shards")
    assert ser.get("shard_size") == shard_size
    names = [r["name"] for r in statement["predicate"]["resources"]]
    if shard_size is None:
        assert names == ["config.json", "exact.bin", "sub/empty", "weights.bin"]
    else:  # empty files are left out, as model_signing does; (path, start) order
        assert names == [
            "config.json:0:13",
            "exact.bin:0:1000",
            "exact.bin:1000:2000",
            "weights.bin:0:1000",
            "weights.bin:1000:2000",
            "weights.bin:2000:2500",
        ]
        algorithm = {r["algorithm"] for r in statement["predicate"]["resources"]}
        assert algorithm == {f"{hash_type}-sharded-{shard_size}"}
    assert verify_bundle(model, bundle, key.public_key).ok

    data = bytearray((model / "weights.bin").read_bytes())
    data[1500] ^= 1
    (model / "weights.bin").write_bytes(bytes(data))
    result = verify_bundle(model, bundle, key.public_key)
    assert not result.ok
    assert result.modified == ["weights.bin" if shard_size is None else "weights.bin:1000:2000"]


def test_digests_match_the_reference_algorithms(model):
    data = (model / "weights.bin").read_bytes()
    import blake3

    expect = {
        "sha256": hashlib.sha256(data[1000:2000]).hexdigest(),
        "blake2b": hashlib.blake2b(data[1000:2000]).hexdigest(),
        "blake3": blake3.blake3(data[1000:2000]).hexdigest(),
    }
    for algorithm, digest in expect.items():
        (got,) = hash_spans([Span(model / "weights.bin", 1000, 2000)], algorithm=algorithm)
        assert got.digest == digest and got.size == 1000
        whole = build_manifest(model / "weights.bin", hash_type=algorithm).resources[0]
        assert (
            whole.digest
            == getattr(hashlib if algorithm != "blake3" else blake3, algorithm)(data).hexdigest()
        )


def test_blake3_windows_cover_large_and_unaligned_ranges(tmp_path, monkeypatch):
    import blake3

    monkeypatch.setattr(hashing, "MMAP_WINDOW", 64 * 1024)
    path = tmp_path / "big"
    data = os.urandom(1_000_003)
    path.write_bytes(data)
    spans = [Span(path), Span(path, 12_345, 987_654), Span(path, 999_999, 1_000_003)]
    got = hash_spans(spans, algorithm="blake3", sizes=[len(data), 975_309, 4])
    assert [g.digest for g in got] == [
        blake3.blake3(data).hexdigest(),
        blake3.blake3(data[12_345:987_654]).hexdigest(),
        blake3.blake3(data[999_999:]).hexdigest(),
    ]


@pytest.mark.parametrize("hash_type", ["sha256", "blake2b", "blake3"])
def test_a_range_past_the_end_names_the_file_and_range(tmp_path, hash_type):
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * 1500)
    with pytest.raises(
        TruncatedError, match=r"w.bin is truncated: it ends at byte 1500, inside shard 1000:2000"
    ):
        hash_spans([Span(path, 1000, 2000)], algorithm=hash_type)


@pytest.mark.parametrize("hash_type", ["sha256", "blake2b"])
def test_truncated_shard_file_fails_naming_file_and_shard(model, key, hash_type):
    bundle = sign_manifest(build_manifest(model, hash_type=hash_type, shard_size=1000), key)
    with open(model / "weights.bin", "r+b") as f:
        f.truncate(2300)
    result = verify_bundle(model, bundle, key.public_key)
    assert not result.ok
    assert result.errors == [
        "weights.bin is truncated: 2300 of 2500 signed bytes, shard 2 (2000:2500) incomplete"
    ]
    assert result.modified == ["weights.bin:2000:2500"]
    with pytest.raises(IntegrityError) as info:
        result.raise_for_failure()
    assert info.value.exit_code == 3 and "\n" not in str(info.value)

    with open(model / "exact.bin", "r+b") as f:
        f.truncate(999)
    result = verify_bundle(model, bundle, key.public_key)
    assert "exact.bin is truncated: 999 of 2000 signed bytes, shard 0 (0:1000) incomplete" in (
        result.errors
    )


def test_grown_missing_and_extra_files_in_shard_mode(model, key):
    bundle = sign_manifest(build_manifest(model, shard_size=1000), key)
    with open(model / "exact.bin", "ab") as f:
        f.write(b"more")
    (model / "config.json").unlink()
    (model / "new.bin").write_bytes(b"new")
    (model / "sub" / "also-empty").write_bytes(b"")  # empty files are not shards: not extra
    result = verify_bundle(model, bundle, key.public_key)
    assert result.missing == ["config.json"]
    assert result.extra == ["new.bin"]
    assert result.errors == [
        "exact.bin has grown: 2004 bytes, 2000 signed; shard 2 (2000:2004) differs"
    ]
    assert not result.ok


def test_a_file_of_another_size_is_not_hashed(model, key, monkeypatch):
    # a bundle cannot make assay hash more than its own shard list, whatever the files
    bundle = sign_manifest(build_manifest(model, shard_size=1), key)
    (model / "weights.bin").write_bytes(os.urandom(5000))
    seen: list[Span] = []
    real = hashing._hash_span

    def spy(span, *args, **kwargs):
        seen.append(span)
        return real(span, *args, **kwargs)

    monkeypatch.setattr(hashing, "_hash_span", spy)
    result = verify_bundle(model, bundle, key.public_key)
    assert not result.ok
    assert all(s.path.name != "weights.bin" for s in seen)


def test_single_file_model_in_shard_mode(model, key):
    path = model / "weights.bin"
    bundle = sign_manifest(build_manifest(path, shard_size=1024), key)
    names = [r["name"] for r in _statement(bundle)["predicate"]["resources"]]
    assert names == [".:0:1024", ".:1024:2048", ".:2048:2500"]
    assert verify_bundle(path, bundle, key.public_key).ok


def test_shard_size_larger_than_the_file_is_one_shard(model, key):
    bundle = sign_manifest(build_manifest(model, shard_size=10**9), key)
    names = [r["name"] for r in _statement(bundle)["predicate"]["resources"]]
    assert "weights.bin:0:2500" in names
    assert verify_bundle(model, bundle, key.public_key).ok


def test_model_signing_float_shard_size_is_read(model, key):
    bundle = sign_manifest(build_manifest(model, shard_size=1000), key)
    text = _resign(bundle, key, lambda s: s["predicate"]["serialization"].update(shard_size=1000.0))
    assert parse_bundle(text).serialization.shard_size == 1000
    assert verify_bundle(model, text, key.public_key).ok


def _shards(statement):
    return statement["predicate"]["resources"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: _shards(s)[0].update(name="config.json"),
            "'config.json' is not a shard",
        ),
        (lambda s: _shards(s)[0].update(name="config.json:0:x"), "bad offset"),
        (lambda s: _shards(s)[0].update(name="config.json:01:13"), "bad offset"),
        (lambda s: _shards(s)[0].update(name="config.json:13:0"), "empty or reversed"),
        (lambda s: _shards(s)[0].update(name="config.json:0:1013"), "longer than the shard size"),
        (lambda s: _shards(s).pop(1), "do not split it"),  # a gap: exact.bin's first shard
        (lambda s: _shards(s)[1].update(name="exact.bin:0:999"), "do not split it"),
        (lambda s: _shards(s)[0].update(algorithm="sha256"), "mode mismatch"),
        (lambda s: _shards(s)[0].update(algorithm="sha256-sharded-999"), "mode mismatch"),
        (lambda s: s["predicate"]["serialization"].update(shard_size=0), "shard_size 0"),
        (lambda s: s["predicate"]["serialization"].update(shard_size=-5), "shard_size -5"),
        (lambda s: s["predicate"]["serialization"].update(shard_size="1000"), "not an integer"),
        (lambda s: s["predicate"]["serialization"].update(hash_type="blake2b"), "mode mismatch"),
        (lambda s: s["predicate"]["serialization"].update(method="files"), "mode mismatch"),
    ],
)
def test_bad_shard_bundles_are_corrupt(model, key, edit, message):
    from assay.integrity.manifest import ResourceDigest, compute_root_digest

    bundle = sign_manifest(build_manifest(model, shard_size=1000), key)

    def edit_and_fix_root(s):
        edit(s)
        s["subject"][0]["digest"]["sha256"] = compute_root_digest(
            [ResourceDigest(r["name"], r["digest"]) for r in _shards(s)]
        )

    text = _resign(bundle, key, edit_and_fix_root)
    with pytest.raises(InvalidBundleError, match=message) as info:
        verify_bundle(model, text, key.public_key)
    assert info.value.exit_code == 3 and "\n" not in str(info.value)


def test_blake2b_digest_length_is_checked(model, key):
    bundle = sign_manifest(build_manifest(model, hash_type="blake2b"), key)

    def shorten(s):
        _shards(s)[0]["digest"] = "ab" * 32

    with pytest.raises(InvalidBundleError, match="bad digest"):
        parse_bundle(_resign(bundle, key, shorten))


def test_shard_digests_are_cached_per_shard(model, key, tmp_path):
    import time

    time.sleep(RACY_WINDOW_NS / 1e9 + 0.05)
    cache = DigestCache(tmp_path / "cache.json")
    first = build_manifest(model, shard_size=1000, cache=cache)
    again = DigestCache(tmp_path / "cache.json")
    second = build_manifest(model, shard_size=1000, cache=again)
    assert second.resources == first.resources
    assert again.hits == 6 and again.misses == 0
    # another shard size or hash type never reuses them
    other = DigestCache(tmp_path / "cache.json")
    build_manifest(model, shard_size=500, cache=other)
    build_manifest(model, hash_type="blake2b", shard_size=1000, cache=other)
    assert other.hits == 0

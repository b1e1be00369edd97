"""`assay sign --hash ... --shard-size ...`, the policy's signing default, and bad mode input."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest


def _statement(sig: Path) -> dict:
    doc = json.loads(sig.read_text())
    return json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))


def _sign(invoke, path: Path, *args: object) -> dict:
    result = invoke("sign", path, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    "args, hash_type, shard_size",
    [
        ((), "sha256", None),
        (("--hash", "blake2b"), "blake2b", None),
        (("--hash", "blake3"), "blake3", None),
        (("--shard-size", "1000"), "sha256", 1000),
        (("--hash", "blake2b", "--shard-size", "4096"), "blake2b", 4096),
    ],
)
def test_sign_and_verify_each_mode(invoke, home, model_dir, args, hash_type, shard_size):
    out = _sign(invoke, model_dir, *args)
    ser = _statement(model_dir / "model.sig")["predicate"]["serialization"]
    assert (ser["hash_type"], ser.get("shard_size")) == (hash_type, shard_size)
    assert out["files"] == 4  # files, not shards, even in shard mode
    assert out["serialization"].startswith(hash_type)
    result = invoke("verify", model_dir)
    assert result.exit_code == 0, result.stderr


def test_truncated_shard_file_exits_3_naming_file_and_shard(invoke, home, model_dir, expect_error):
    _sign(invoke, model_dir, "--shard-size", "4096")
    with open(model_dir / "weights.bin", "r+b") as f:  # 16384 bytes, four shards
        f.truncate(10_000)
    line = expect_error(invoke("verify", model_dir), 3, "verification failed")
    assert "weights.bin is truncated: 10000 of 16384 signed bytes, shard 2 (8192:12288)" in line
    result = invoke("verify", model_dir, "--json")
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["modified"] == ["weights.bin:8192:12288"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--shard-size", "0"), "0 is not in the range x>=1"),
        (("--shard-size", "-3"), "is not in the range x>=1"),
        (("--hash", "md5"), "'md5' is not one of"),
        (("--hash", "blake3", "--shard-size", "1000"), "--shard-size does not apply to blake3"),
    ],
)
def test_bad_mode_flags_are_usage_errors(invoke, home, model_dir, snapshot, args, fragment):
    before = snapshot(home, model_dir)
    result = invoke("sign", model_dir, *args)
    assert result.exit_code == 2, result.stderr
    assert fragment in result.stderr
    assert snapshot(home, model_dir) == before  # nothing written


def test_too_many_shards_is_refused_before_anything_is_written(
    invoke, home, model_dir, snapshot, expect_error
):
    (model_dir / "big.bin").write_bytes(b"\0" * 200_001)
    before = snapshot(home, model_dir)
    expect_error(invoke("sign", model_dir, "--shard-size", "1"), 1, "use a larger --shard-size")
    assert snapshot(home, model_dir) == before


def test_policy_signing_default_applies_and_flags_override(invoke, home, model_dir, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("signing:\n  hash: blake2b\n  shard_size: 8192\n")
    result = invoke("policy", "set", policy)
    assert result.exit_code == 0, result.stderr
    shown = invoke("policy", "show")
    assert "signing:           blake2b, shards of 8192 bytes" in shown.stdout

    _sign(invoke, model_dir)
    ser = _statement(model_dir / "model.sig")["predicate"]["serialization"]
    assert (ser["method"], ser["hash_type"], ser["shard_size"]) == ("shards", "blake2b", 8192)
    assert invoke("verify", model_dir).exit_code == 0

    _sign(invoke, model_dir, "--hash", "blake3")  # flags mean exactly what they say
    ser = _statement(model_dir / "model.sig")["predicate"]["serialization"]
    assert (ser["method"], ser["hash_type"]) == ("files", "blake3")
    assert invoke("verify", model_dir).exit_code == 0


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("signing: blake3\n", "signing must be a mapping"),
        ("signing:\n  hash: md5\n", "signing.hash must be one of"),
        ("signing:\n  shard_size: 0\n", "signing.shard_size must be a positive"),
        ("signing:\n  shard_size: true\n", "signing.shard_size must be a positive"),
        ("signing:\n  hash: blake3\n  shard_size: 10\n", "does not apply to blake3"),
        ("signing:\n  algo: sha256\n", "unknown key 'algo' under signing"),
    ],
)
def test_bad_signing_policy_is_refused(invoke, home, tmp_path, expect_error, text, fragment):
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    expect_error(invoke("policy", "set", policy), 1, fragment)

"""Interoperability with the OpenSSF reference tool, both ways (model_signing 1.1.1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assay.integrity.keys import PublicKey, generate_key
from assay.integrity.manifest import build_manifest
from assay.integrity.oms import sign_manifest, verify_bundle

pytestmark = [pytest.mark.interop, pytest.mark.slow]

MODEL_SIGNING = Path(sys.executable).with_name("model_signing")
if not MODEL_SIGNING.exists():  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="model_signing is not installed beside python"))


def _run(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MODEL_SIGNING), *map(str, args)], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def model(tmp_path) -> Path:
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(os.urandom(200_000))
    (root / "config.json").write_text('{"a": 1}')
    (root / "sub" / "empty").write_bytes(b"")
    (root / "a-c").write_text("dash sorts before slash")
    (root / "sub" / "x").write_text("x")
    return root


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_model_signing_verifies_assay_bundle(model, tmp_path):
    key = generate_key("ecdsa-p256")
    (tmp_path / "pub.pem").write_text(key.public_key.pem)
    sig = model / "model.sig"
    sig.write_text(sign_manifest(build_manifest(model), key))
    ok = _run("verify", "key", "--signature", sig, "--public_key", tmp_path / "pub.pem", model)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Verification succeeded" in ok.stdout

    _tamper(model / "weights.bin")
    bad = _run("verify", "key", "--signature", sig, "--public_key", tmp_path / "pub.pem", model)
    assert bad.returncode != 0
    assert not verify_bundle(model, sig.read_text(), key.public_key).ok


def test_model_signing_verifies_assay_single_file_bundle(model, tmp_path):
    key = generate_key("ecdsa-p384")
    (tmp_path / "pub.pem").write_text(key.public_key.pem)
    sig = tmp_path / "w.sig"
    sig.write_text(sign_manifest(build_manifest(model / "weights.bin"), key))
    ok = _run(
        "verify",
        "key",
        "--signature",
        sig,
        "--public_key",
        tmp_path / "pub.pem",
        model / "weights.bin",
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_assay_verifies_model_signing_bundle(model, tmp_path):
    key = generate_key("ecdsa-p256")
    (tmp_path / "key.pem").write_bytes(key.private_pem())
    sig = model / "model.sig"
    out = _run("sign", "key", "--private_key", tmp_path / "key.pem", "--signature", sig, model)
    assert out.returncode == 0, out.stdout + out.stderr

    public = PublicKey.from_pem(key.public_key.pem)
    result = verify_bundle(model, sig.read_text(), public)
    assert result.ok, result.summary()
    # same manifest as ours, resource for resource
    assert result.root_digest == build_manifest(model).root_digest

    _tamper(model / "weights.bin")
    result = verify_bundle(model, sig.read_text(), public)
    assert result.modified == ["weights.bin"]
    bad = _run("verify", "key", "--signature", sig, "--public_key", tmp_path / "key.pub", model)
    assert bad.returncode != 0


def test_assay_verifies_model_signing_p384_bundle_on_a_copy(model, tmp_path):
    # (model_signing 1.1.1 cannot sign with --password: it passes str where bytes are needed)
    key = generate_key("ecdsa-p384")
    (tmp_path / "key.pem").write_bytes(key.private_pem())
    sig = tmp_path / "model.sig"
    out = _run("sign", "key", "--private_key", tmp_path / "key.pem", "--signature", sig, model)
    assert out.returncode == 0, out.stdout + out.stderr
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    assert verify_bundle(copy, sig.read_text(), key.public_key).ok


# -- every mode, both ways, through model_signing's Python API ------------------------------------

# (hash_type, shard_size); model_signing's own name for blake2b is "blake2"
API_MODES = [
    ("sha256", None),
    ("blake2b", None),
    ("blake3", None),
    ("sha256", 1000),
    ("blake2b", 1000),
]


def _ms_hashing(hash_type: str, shard_size: int | None):
    from model_signing import hashing

    algorithm = "blake2" if hash_type == "blake2b" else hash_type
    if shard_size is None:
        return hashing.Config().use_file_serialization(hashing_algorithm=algorithm)
    return hashing.Config().use_shard_serialization(
        hashing_algorithm=algorithm, shard_size=shard_size
    )


@pytest.mark.parametrize("hash_type, shard_size", API_MODES)
def test_assay_verifies_model_signing_api_bundle_in_every_mode(
    model, tmp_path, hash_type, shard_size
):
    from model_signing import signing

    key = generate_key("ecdsa-p256")
    (tmp_path / "key.pem").write_bytes(key.private_pem())
    sig = tmp_path / "model.sig"
    signing.Config().use_elliptic_key_signer(private_key=tmp_path / "key.pem").set_hashing_config(
        _ms_hashing(hash_type, shard_size)
    ).sign(model, sig)

    result = verify_bundle(model, sig.read_text(), key.public_key)
    assert result.ok, result.summary()
    ours = build_manifest(model, hash_type=hash_type, shard_size=shard_size)
    assert result.root_digest == ours.root_digest  # the same manifest, resource for resource

    _tamper(model / "weights.bin")
    result = verify_bundle(model, sig.read_text(), key.public_key)
    assert not result.ok and result.modified
    assert all(m.startswith("weights.bin") for m in result.modified)


@pytest.mark.parametrize("hash_type, shard_size", API_MODES)
def test_model_signing_api_verifies_assay_bundle_in_every_mode(
    model, tmp_path, hash_type, shard_size
):
    from model_signing import verifying

    key = generate_key("ecdsa-p256")
    (tmp_path / "pub.pem").write_text(key.public_key.pem)
    sig = tmp_path / "model.sig"
    sig.write_text(
        sign_manifest(build_manifest(model, hash_type=hash_type, shard_size=shard_size), key)
    )

    def verify(explicit: bool) -> None:
        config = verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "pub.pem")
        if explicit:
            config = config.set_hashing_config(_ms_hashing(hash_type, shard_size))
        config.verify(model, sig)

    verify(explicit=True)
    if hash_type == "blake2b":
        # model_signing 1.1.1 writes hash_type "blake2b" but guesses only from "blake2":
        # its verifier needs the hashing config spelled out (its own blake2b bundles too)
        with pytest.raises(ValueError, match="Unsupported hashing method blake2b"):
            verify(explicit=False)
    else:
        verify(explicit=False)  # reads the mode from the bundle (int shard_size: guessable)

    _tamper(model / "weights.bin")
    with pytest.raises(ValueError, match="Signature mismatch"):
        verify(explicit=True)


@pytest.mark.parametrize(
    "hash_type, shard_size", [("blake3", None), ("blake2b", None), ("sha256", 1000)]
)
def test_model_signing_cli_verifies_only_sha256_files(model, tmp_path, hash_type, shard_size):
    key = generate_key("ecdsa-p256")
    (tmp_path / "pub.pem").write_text(key.public_key.pem)
    sig = tmp_path / "model.sig"
    manifest = build_manifest(model, hash_type=hash_type, shard_size=shard_size)
    sig.write_text(sign_manifest(manifest, key))
    out = _run("verify", "key", "--signature", sig, "--public_key", tmp_path / "pub.pem", model)
    # its CLI re-hashes with sha256 files whatever the bundle says
    assert out.returncode != 0
    assert "Signature mismatch" in out.stdout + out.stderr

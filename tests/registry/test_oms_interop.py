"""Interoperability with the OpenSSF reference tool, both ways (model_signing 1.1.1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assay.registry.keys import PublicKey, generate_key
from assay.registry.manifest import build_manifest
from assay.registry.oms import sign_manifest, verify_bundle

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

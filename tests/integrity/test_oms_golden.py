"""Golden bundles made by released model-signing versions (tests/data/oms, see its README)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from assay.integrity.keys import PublicKey
from assay.integrity.oms import parse_bundle, verify_bundle

CASES = {
    # version: (model path inside the case folder, extra ignore paths)
    "v1.0.0": ("signme-1", []),
    "v1.0.1": (".", ["ignore-me"]),
    "v1.1.0": (".", []),
}


@pytest.fixture
def golden(data_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of tests/data/oms (never tamper with the originals)."""
    dst = tmp_path / "oms"
    shutil.copytree(data_dir / "oms", dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


@pytest.fixture
def public_key(data_dir: Path) -> PublicKey:
    return PublicKey.from_pem((data_dir / "oms" / "signing-key-pub.pem").read_text())


def _verify(root: Path, version: str, public_key: PublicKey):
    case = root / f"{version}-elliptic-key"
    model, ignores = CASES[version]
    return verify_bundle(
        case / model, (case / "model.sig").read_text(), public_key, ignore_paths=ignores
    )


def _signed_files(root: Path, version: str) -> list[Path]:
    case = root / f"{version}-elliptic-key"
    model, _ = CASES[version]
    if model != ".":
        return [case / model]
    return [case / "signme-1", case / "signme-2"]


def test_key_is_p384(public_key):
    assert public_key.key_type == "ecdsa-p384"


@pytest.mark.parametrize("version", sorted(CASES))
def test_golden_verifies(data_dir, public_key, version):
    result = _verify(data_dir / "oms", version, public_key)
    assert result.ok, result.summary()
    bundle = parse_bundle((data_dir / "oms" / f"{version}-elliptic-key" / "model.sig").read_text())
    assert bundle.hint_matches(public_key) in (True, None) or bundle.embedded_public_key_pem


@pytest.mark.parametrize("version", sorted(CASES))
def test_golden_fails_after_any_byte_changes(golden, public_key, version):
    for path in _signed_files(golden, version):
        original = path.read_bytes()
        for i in range(len(original)):
            data = bytearray(original)
            data[i] ^= 0x20
            path.write_bytes(bytes(data))
            result = _verify(golden, version, public_key)
            assert not result.ok and result.signature_ok
            assert result.modified == ["." if CASES[version][0] != "." else path.name], (path, i)
        path.write_bytes(original + b"\n")  # appended byte
        assert not _verify(golden, version, public_key).ok
        path.write_bytes(original)
        assert _verify(golden, version, public_key).ok


def test_golden_v1_0_1_without_ignore_reports_extra(data_dir, public_key):
    case = data_dir / "oms" / "v1.0.1-elliptic-key"
    result = verify_bundle(case, (case / "model.sig").read_text(), public_key)
    assert result.extra == ["ignore-me"]


def test_golden_records_ignore_paths(data_dir):
    bundle = parse_bundle((data_dir / "oms" / "v1.1.0-elliptic-key" / "model.sig").read_text())
    assert bundle.ignore_paths_recorded
    assert set(bundle.serialization.ignore_paths) == {
        ".git",
        "model.sig",
        "ignore-me",
        ".gitattributes",
        ".gitignore",
        ".github",
    }

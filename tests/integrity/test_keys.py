"""Keys (pure crypto) and the on-disk keyring."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from assay.core.errors import ConfigError, FormatError, NotFoundError, RefusedError
from assay.core.settings import Settings
from assay.integrity.keyring import Keyring, resolve_signing_key
from assay.integrity.keys import PublicKey, generate_key, load_private_pem


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384", "ed25519"])
def test_sign_verify_roundtrip(key_type):
    key = generate_key(key_type)
    assert key.key_type == key_type
    sig = key.sign(b"data")
    assert key.public_key.verify(sig, b"data")
    assert not key.public_key.verify(sig, b"datA")
    assert not key.public_key.verify(b"garbage", b"data")
    assert not generate_key(key_type).public_key.verify(sig, b"data")


def test_key_id_is_sha256_of_der_spki():
    key = generate_key()
    pub = serialization.load_pem_public_key(key.public_key.pem.encode())
    der = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.key_id == hashlib.sha256(der).hexdigest()
    assert key.public_key.oms_hint == hashlib.sha256(key.public_key.pem.encode()).hexdigest()
    assert PublicKey.from_pem(key.public_key.pem).key_id == key.key_id


def test_ecdsa_signature_is_der():
    key = generate_key("ecdsa-p256")
    sig = key.sign(b"x")
    assert sig[0] == 0x30  # DER SEQUENCE


def test_public_from_pem_garbage():
    with pytest.raises(FormatError):
        PublicKey.from_pem("hello")
    with pytest.raises(FormatError):
        PublicKey.from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_private_pem_passphrase():
    key = generate_key()
    pem = key.private_pem("s3cret")
    assert b"ENCRYPTED" in pem
    assert load_private_pem(pem, "s3cret").key_id == key.key_id
    with pytest.raises(FormatError, match=r"^wrong passphrase for key file k\.pem$"):
        load_private_pem(pem, "nope", source="k.pem")
    with pytest.raises(FormatError, match="is encrypted: set ASSAY_KEY_PASSPHRASE"):
        load_private_pem(pem, None, source="k.pem")
    # a passphrase given for an unencrypted key is harmless
    assert load_private_pem(key.private_pem(), "ignored").key_id == key.key_id
    with pytest.raises(FormatError, match="not a PEM private key"):
        load_private_pem(b"nonsense")


def test_keyring_generate_list_modes(tmp_path):
    ring = Keyring(tmp_path / "keys")
    info = ring.generate("ci", "ecdsa-p256", passphrase=None)
    assert info.has_private and info.name == "ci" and len(info.key_id) == 64
    assert stat.S_IMODE(os.stat(info.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert ring.default_key().key_id == info.key_id
    other = ring.generate("other", "ed25519")
    assert [k.name for k in ring.list()] == ["ci", "other"]
    assert ring.default_key().key_id == info.key_id  # first key stays the default
    assert ring.load_signing_key(None).key_id == info.key_id
    assert ring.load_signing_key("other").key_id == other.key_id
    assert ring.load_signing_key(other.key_id[:8]).key_id == other.key_id
    assert ring.load_signing_key(other.key_id.upper()).key_id == other.key_id
    assert ring.load_signing_key(str(info.path)).key_id == info.key_id
    assert PublicKey.from_pem(ring.public_pem("ci")).key_id == info.key_id
    with pytest.raises(RefusedError, match="already exists"):
        ring.generate("ci")


def test_keyring_unknown_key_and_passphrase(tmp_path):
    ring = Keyring(tmp_path / "keys")
    info = ring.generate("enc", passphrase="pw")
    with pytest.raises(NotFoundError, match="no key 'deadbeefcafe'"):
        ring.load_signing_key("deadbeefcafe")
    with pytest.raises(FormatError, match="wrong passphrase for key file .*enc|wrong passphrase"):
        ring.load_signing_key("enc", "bad")
    with pytest.raises(FormatError, match="encrypted: set ASSAY_KEY_PASSPHRASE"):
        ring.load_signing_key("enc", None)
    assert ring.load_signing_key("enc", "pw").key_id == info.key_id


def test_private_key_never_overwritten(tmp_path):
    ring = Keyring(tmp_path / "keys")
    info = ring.generate("a")
    before = info.path.read_bytes()
    (tmp_path / "keys" / f"{info.key_id}.json").unlink()  # forget it, keep the key file
    key = load_private_pem(before)
    with pytest.raises(RefusedError, match="refusing to overwrite"):
        ring.import_private("again", key.private_pem())
    assert info.path.read_bytes() == before


def test_resolve_signing_key_precedence(assay_home, monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="no default signing key"):
        resolve_signing_key(Settings.from_env())
    ring = Keyring(Settings.from_env().keys_dir)
    default = ring.generate("default")
    named = ring.generate("named")
    assert resolve_signing_key(Settings.from_env()).key_id == default.key_id
    assert resolve_signing_key(Settings.from_env(), "named").key_id == named.key_id

    env_key = generate_key()
    monkeypatch.setenv("ASSAY_KEY", env_key.private_pem("pp").decode())
    monkeypatch.setenv("ASSAY_KEY_PASSPHRASE", "pp")
    assert resolve_signing_key(Settings.from_env()).key_id == env_key.key_id
    assert resolve_signing_key(Settings.from_env(), "named").key_id == named.key_id

    path = tmp_path / "ci.pem"
    path.write_bytes(env_key.private_pem("pp"))
    monkeypatch.setenv("ASSAY_KEY", str(path))
    assert resolve_signing_key(Settings.from_env()).key_id == env_key.key_id
    monkeypatch.setenv("ASSAY_KEY_PASSPHRASE", "wrong")
    with pytest.raises(FormatError, match="wrong passphrase"):
        resolve_signing_key(Settings.from_env())
    with pytest.raises(NotFoundError):
        resolve_signing_key(Settings.from_env(), "0123456789abcdef")

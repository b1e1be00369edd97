"""Signing keys: generation, PEM import/export, signatures. Pure crypto, no storage.

Key types: ``ecdsa-p256`` (default; verifiable by OpenSSF ``model_signing``), ``ecdsa-p384``,
``ecdsa-p521`` and ``ed25519`` (not OMS-verifiable: the OMS key method accepts ECDSA only).
ECDSA signatures are DER-encoded and use the hash that matches the curve (SHA-256 for P-256,
SHA-384 for P-384, SHA-512 for P-521), as ``model_signing`` does.

A key id is the lowercase hex SHA-256 of the DER SubjectPublicKeyInfo. OMS bundles carry a
different hint, :attr:`PublicKey.oms_hint`: the SHA-256 of the PEM SubjectPublicKeyInfo.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from assay.core.errors import AssayError, FormatError

__all__ = [
    "DEFAULT_KEY_TYPE",
    "KEY_TYPES",
    "PublicKey",
    "SigningKey",
    "generate_key",
    "load_private_pem",
]

DEFAULT_KEY_TYPE = "ecdsa-p256"

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ecdsa-p256": ec.SECP256R1,
    "ecdsa-p384": ec.SECP384R1,
    "ecdsa-p521": ec.SECP521R1,
}
_CURVE_TYPES = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384", "secp521r1": "ecdsa-p521"}
KEY_TYPES: tuple[str, ...] = (*_CURVES, "ed25519")


def _ec_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    if curve.key_size <= 256:
        return hashes.SHA256()
    if curve.key_size <= 384:
        return hashes.SHA384()
    return hashes.SHA512()


def _key_type_of(key) -> str:
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        name = key.curve.name
        if name not in _CURVE_TYPES:
            raise FormatError(f"unsupported elliptic curve {name} (use P-256, P-384 or P-521)")
        return _CURVE_TYPES[name]
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return "ed25519"
    raise FormatError(
        f"unsupported key algorithm {type(key).__name__} (use ECDSA P-256/384/521 or Ed25519)"
    )


@dataclass(frozen=True)
class PublicKey:
    """A public key that verifies signatures."""

    _key: object = field(repr=False, compare=False)
    key_id: str
    key_type: str

    @classmethod
    def from_crypto(cls, key) -> PublicKey:
        key_type = _key_type_of(key)
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(_key=key, key_id=hashlib.sha256(der).hexdigest(), key_type=key_type)

    @classmethod
    def from_pem(cls, text: str | bytes) -> PublicKey:
        """Load a PEM public key (text before ``-----BEGIN`` is allowed). FormatError if garbage."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        start = data.find(b"-----BEGIN PUBLIC KEY-----")
        if start < 0:
            raise FormatError("not a PEM public key (no '-----BEGIN PUBLIC KEY-----' block)")
        try:
            key = serialization.load_pem_public_key(data[start:])
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise FormatError(f"not a valid PEM public key: {exc}") from exc
        return cls.from_crypto(key)

    @property
    def pem(self) -> str:
        return self.pem_bytes.decode("ascii")

    @property
    def pem_bytes(self) -> bytes:
        return self._key.public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def oms_hint(self) -> str:
        """``verificationMaterial.publicKey.hint`` as model_signing 1.1+ writes it."""
        return hashlib.sha256(self.pem_bytes).hexdigest()

    @property
    def oms_compatible(self) -> bool:
        return self.key_type.startswith("ecdsa-")

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True if ``signature`` is valid over ``data``. Never raises."""
        try:
            if isinstance(self._key, ec.EllipticCurvePublicKey):
                self._key.verify(signature, data, ec.ECDSA(_ec_hash(self._key.curve)))
            elif isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(signature, data)
            else:  # pragma: no cover - from_crypto refuses other types
                return False
        except (InvalidSignature, ValueError, TypeError):
            return False
        except Exception:  # noqa: BLE001 - a verifier must answer, never crash
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    """A private key that signs."""

    _key: object = field(repr=False, compare=False)
    public_key: PublicKey

    @classmethod
    def from_crypto(cls, key) -> SigningKey:
        _key_type_of(key)
        return cls(_key=key, public_key=PublicKey.from_crypto(key.public_key()))

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    @property
    def key_type(self) -> str:
        return self.public_key.key_type

    def sign(self, data: bytes) -> bytes:
        """Signature over ``data`` (DER ECDSA with the curve's hash, or raw Ed25519)."""
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(data, ec.ECDSA(_ec_hash(self._key.curve)))
        return self._key.sign(data)  # type: ignore[attr-defined]

    def private_pem(self, passphrase: str | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with ``passphrase`` when given."""
        encryption: serialization.KeySerializationEncryption
        if passphrase:
            encryption = serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
        else:
            encryption = serialization.NoEncryption()
        return self._key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )


def generate_key(key_type: str = DEFAULT_KEY_TYPE) -> SigningKey:
    """A new random key of ``key_type`` (see :data:`KEY_TYPES`)."""
    if key_type in _CURVES:
        return SigningKey.from_crypto(ec.generate_private_key(_CURVES[key_type]()))
    if key_type == "ed25519":
        return SigningKey.from_crypto(ed25519.Ed25519PrivateKey.generate())
    raise AssayError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def load_private_pem(
    data: bytes | str, passphrase: str | None = None, *, source: str = "key"
) -> SigningKey:
    """Load a PEM private key; ``source`` names it in error messages (e.g. the file path)."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if b"-----BEGIN" not in raw or b"PRIVATE KEY-----" not in raw:
        raise FormatError(f"{_describe(source)} is not a PEM private key")
    encrypted = b"ENCRYPTED" in raw
    if encrypted and not passphrase:
        raise FormatError(f"{_describe(source)} is encrypted: set ASSAY_KEY_PASSPHRASE")
    password = passphrase.encode("utf-8") if (encrypted and passphrase) else None
    try:
        key = serialization.load_pem_private_key(raw, password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if encrypted:
            raise FormatError(f"wrong passphrase for {_describe(source)}") from exc
        raise FormatError(f"{_describe(source)} is not a valid PEM private key: {exc}") from exc
    return SigningKey.from_crypto(key)


def _describe(source: str) -> str:
    if source == "key":
        return "key"
    if source.startswith("ASSAY_"):
        return f"the key in {source}"
    return f"key file {source}"

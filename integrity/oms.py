"""OpenSSF Model Signing (OMS) v1.0 bundles: build, parse, verify.

A bundle is a Sigstore bundle v0.3 JSON document holding a DSSE envelope whose payload
(``application/vnd.in-toto+json``) is an in-toto Statement v1::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": <model name>, "digest": {"sha256": <root digest>}}],
     "predicateType": "https://model_signing/signature/v1.0",
     "predicate": {"serialization": {"method": "files", "hash_type": "sha256",
                                     "allow_symlinks": false, "ignore_paths": [...]},
                   "resources": [{"name": "a/b", "algorithm": "sha256", "digest": <hex>}, ...]}}

The signature is over the DSSE pre-authentication encoding (PAE) of the payload. The key is named
in ``verificationMaterial.publicKey.hint`` = SHA-256 of the PEM public key (model_signing 1.1+);
older bundles (1.0.x) embed the PEM as ``publicKey.rawBytes`` instead. Both are read.

Serializations (model_signing 1.1.1's modes): ``files`` or ``shards`` (with ``shard_size``), each
with ``hash_type`` sha256, blake2b or blake3. A shard resource is named ``path:start:end`` with
algorithm ``<hash_type>-sharded-<shard_size>``; the subject digest is always SHA-256 over the raw
resource digests. Verification re-hashes the real files with the serialization recorded in the
bundle; a bundle whose resources do not fit its declared mode is corrupt (exit 3).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import AssayError, IntegrityError, RefusedError
from assay.core.safe_json import loads_untrusted
from assay.integrity._shards import MAX_SHARD_SIZE, check_shard_layout, parse_shard_name
from assay.integrity.hashing import HASH_TYPES
from assay.integrity.keys import PublicKey, SigningKey
from assay.integrity.manifest import (
    DEFAULT_IGNORE_PATHS,
    Manifest,
    ResourceDigest,
    Serialization,
    build_manifest,
    compute_root_digest,
)

if TYPE_CHECKING:
    from assay.integrity.digest_cache import DigestCache
    from assay.integrity.hashing import ProgressCallback

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "Bundle",
    "InvalidBundleError",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "UnsupportedBundleError",
    "VerificationFailedError",
    "VerificationResult",
    "build_statement",
    "pae",
    "parse_bundle",
    "sign_manifest",
    "verify_bundle",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
SUPPORTED_METHODS = ("files", "shards")
SUPPORTED_HASHES = tuple(HASH_TYPES)
#: The largest bundle assay reads (a bundle lists ~150 bytes per file: ~100k files).
MAX_BUNDLE_BYTES = 16 * 1024**2


class InvalidBundleError(IntegrityError):
    """The signature bundle is corrupt, truncated, inconsistent or not an OMS bundle (exit 3)."""


class UnsupportedBundleError(InvalidBundleError):
    """The bundle is well formed but uses a serialization assay cannot verify."""


class VerificationFailedError(IntegrityError):
    """Signature or file digests do not check out."""


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    ptype = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)


# -- signing ---------------------------------------------------------------------------------


def build_statement(manifest: Manifest) -> dict[str, Any]:
    """The in-toto statement for ``manifest``, as model_signing builds it."""
    ser = manifest.serialization
    if ser.method not in SUPPORTED_METHODS or ser.hash_type not in SUPPORTED_HASHES:
        raise UnsupportedBundleError(f"cannot sign serialization {ser.method}/{ser.hash_type}")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": manifest.model_name, "digest": {"sha256": manifest.root_digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": ser.to_dict(),
            "resources": [
                {"name": r.name, "algorithm": ser.resource_algorithm, "digest": r.digest}
                for r in manifest.resources
            ],
        },
    }


def sign_manifest(manifest: Manifest, key: SigningKey) -> str:
    """A signed OMS bundle (JSON text) for ``manifest``; RefusedError if it would be too big to read."""
    payload = json.dumps(build_statement(manifest), indent=2).encode("utf-8")
    signature = key.sign(pae(payload))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key.public_key.oms_hint},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
        },
    }
    text = json.dumps(bundle, indent=2) + "\n"
    if len(text) > MAX_BUNDLE_BYTES:
        # Never write a bundle that verification would refuse to read (about 67,000 files).
        raise RefusedError(
            f"cannot sign {len(manifest.resources)} files in one bundle: it would be "
            f"{len(text)} bytes, over the {MAX_BUNDLE_BYTES} bytes assay reads back; "
            "sign sub-folders separately"
        )
    return text


# -- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A parsed (not yet verified) OMS bundle."""

    statement: dict[str, Any]
    model_name: str
    root_digest: str
    resources: tuple[ResourceDigest, ...]
    serialization: Serialization
    ignore_paths_recorded: bool
    key_hint: str | None
    embedded_public_key_pem: str | None
    signatures: tuple[bytes, ...]
    payload: bytes
    payload_type: str = PAYLOAD_TYPE
    #: shards only: each signed file's size (the end of its last shard)
    signed_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def signature(self) -> bytes:
        return self.signatures[0]

    @property
    def manifest(self) -> Manifest:
        return Manifest(self.model_name, self.resources, self.serialization)

    def hint_matches(self, public_key: PublicKey) -> bool | None:
        """Whether the bundle names ``public_key`` (None when it names no key)."""
        if self.key_hint:
            return self.key_hint.lower() in (public_key.oms_hint, public_key.key_id)
        if self.embedded_public_key_pem:
            try:
                return PublicKey.from_pem(self.embedded_public_key_pem).key_id == public_key.key_id
            except Exception:  # noqa: BLE001 - a malformed embedded key names nothing
                return False
        return None


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidBundleError(f"corrupt signature bundle: {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBundleError(f"corrupt signature bundle: {what} is not valid base64") from exc


def _get(obj: Any, key: str, where: str, kind: type | tuple[type, ...] = dict) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise InvalidBundleError(f"corrupt signature bundle: missing {where}")
    value = obj[key]
    if not isinstance(value, kind):
        raise InvalidBundleError(f"corrupt signature bundle: {where} has the wrong type")
    return value


def _is_hex_digest(value: Any, length: int = 64) -> bool:
    if not isinstance(value, str) or len(value) != length:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def parse_bundle(text: str | bytes) -> Bundle:
    """Parse an OMS bundle. Raises :class:`InvalidBundleError` (exit 3) on anything malformed.

    Bounded on any input: at most :data:`MAX_BUNDLE_BYTES`, JSON nested at most 64 deep, no
    over-long integers, no duplicate keys, and an embedded public key must be a valid key.
    """
    if len(text) > MAX_BUNDLE_BYTES:
        raise InvalidBundleError(
            f"corrupt signature bundle: {len(text)} bytes, over the limit of {MAX_BUNDLE_BYTES}"
        )
    doc = loads_untrusted(
        text, what="corrupt signature bundle: the document", error=InvalidBundleError
    )
    if not isinstance(doc, dict):
        raise InvalidBundleError("corrupt signature bundle: not a JSON object")
    media_type = doc.get("mediaType")
    if media_type != BUNDLE_MEDIA_TYPE:
        raise InvalidBundleError(
            f"not an OMS signature bundle: mediaType is {media_type!r}, "
            f"expected {BUNDLE_MEDIA_TYPE!r}"
        )

    material = doc.get("verificationMaterial") or {}
    if not isinstance(material, dict):
        raise InvalidBundleError("corrupt signature bundle: verificationMaterial is not an object")
    key_hint: str | None = None
    embedded_pem: str | None = None
    pk = material.get("publicKey")
    if isinstance(pk, dict):
        if isinstance(pk.get("hint"), str) and pk["hint"]:
            key_hint = pk["hint"]
        if pk.get("rawBytes"):
            raw = _b64(pk["rawBytes"], "verificationMaterial.publicKey.rawBytes")
            embedded_pem = raw.decode("utf-8", errors="replace")
            try:
                PublicKey.from_pem(embedded_pem)
            except AssayError as exc:
                raise InvalidBundleError(
                    "corrupt signature bundle: the embedded public key is not a valid key"
                ) from exc

    env = _get(doc, "dsseEnvelope", "dsseEnvelope")
    payload_type = _get(env, "payloadType", "dsseEnvelope.payloadType", str)
    if payload_type != PAYLOAD_TYPE:
        raise InvalidBundleError(
            f"not an OMS signature bundle: payloadType is {payload_type!r}, expected {PAYLOAD_TYPE!r}"
        )
    payload = _b64(_get(env, "payload", "dsseEnvelope.payload", str), "dsseEnvelope.payload")
    sigs = _get(env, "signatures", "dsseEnvelope.signatures", list)
    if not sigs:
        raise InvalidBundleError("corrupt signature bundle: the envelope holds no signature")
    signatures = tuple(
        _b64(_get(s, "sig", "dsseEnvelope.signatures[].sig", str), "signature") for s in sigs
    )

    statement = loads_untrusted(
        payload, what="corrupt signature bundle: the payload", error=InvalidBundleError
    )
    if not isinstance(statement, dict):
        raise InvalidBundleError("corrupt signature bundle: the payload is not a JSON object")
    if statement.get("_type") != STATEMENT_TYPE:
        raise InvalidBundleError(
            f"not an OMS signature bundle: statement type {statement.get('_type')!r}"
        )
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise UnsupportedBundleError(
            f"unsupported predicate type {statement.get('predicateType')!r}; "
            f"assay verifies {PREDICATE_TYPE}"
        )
    subjects = _get(statement, "subject", "statement subject", list)
    if len(subjects) != 1:
        raise InvalidBundleError(
            f"corrupt signature bundle: expected one subject, found {len(subjects)}"
        )
    model_name = _get(subjects[0], "name", "subject name", str)
    digest = _get(subjects[0], "digest", "subject digest")
    root = _get(digest, "sha256", "subject sha256 digest", str).lower()

    predicate = _get(statement, "predicate", "predicate")
    ser = _get(predicate, "serialization", "predicate.serialization")
    method = _get(ser, "method", "serialization.method", str)
    if method not in SUPPORTED_METHODS:
        raise UnsupportedBundleError(
            f"unsupported serialization method {method!r}; assay verifies "
            + " and ".join(repr(m) for m in SUPPORTED_METHODS)
        )
    hash_type = _get(ser, "hash_type", "serialization.hash_type", str)
    if hash_type not in SUPPORTED_HASHES:
        raise UnsupportedBundleError(
            f"unsupported hash type {hash_type!r}; assay verifies {', '.join(SUPPORTED_HASHES)}"
        )
    shard_size = _shard_size(ser) if method == "shards" else None
    allow_symlinks = ser.get("allow_symlinks", False)
    if isinstance(allow_symlinks, str):  # pre-1.0 writers used strings
        allow_symlinks = allow_symlinks.lower() == "true"
    if not isinstance(allow_symlinks, bool):
        raise InvalidBundleError("corrupt signature bundle: allow_symlinks is not a boolean")
    recorded = "ignore_paths" in ser
    ignore_paths = ser.get("ignore_paths") or []
    if not isinstance(ignore_paths, list) or not all(isinstance(p, str) for p in ignore_paths):
        raise InvalidBundleError("corrupt signature bundle: ignore_paths is not a list of paths")
    serialization = Serialization(
        method=method,
        hash_type=hash_type,
        allow_symlinks=allow_symlinks,
        ignore_paths=tuple(ignore_paths),
        shard_size=shard_size,
    )
    expected_algorithm = serialization.resource_algorithm
    digest_length = HASH_TYPES[hash_type]

    resources: list[ResourceDigest] = []
    seen: set[str] = set()
    for res in _get(predicate, "resources", "predicate.resources", list):
        name = _get(res, "name", "resource name", str)
        algorithm = _get(res, "algorithm", "resource algorithm", str)
        value = _get(res, "digest", "resource digest", str)
        if algorithm != expected_algorithm:
            raise UnsupportedBundleError(
                f"mode mismatch in the signature bundle: resource {name[:200]!r} uses "
                f"{algorithm[:100]!r}, its serialization ({serialization.mode}) needs "
                f"{expected_algorithm!r}"
            )
        if not _is_hex_digest(value, digest_length):
            raise InvalidBundleError(f"corrupt signature bundle: bad digest for {name[:200]!r}")
        if name in seen:
            raise InvalidBundleError(f"corrupt signature bundle: {name[:200]!r} is listed twice")
        seen.add(name)
        resources.append(ResourceDigest(name=name, digest=value.lower()))
    signed_sizes: dict[str, int] = {}
    if shard_size is not None:
        try:
            shards = [parse_shard_name(r.name) for r in resources]
            signed_sizes = check_shard_layout(shards, shard_size)
        except InvalidBundleError:
            raise
        except IntegrityError as exc:
            raise InvalidBundleError(str(exc)) from exc

    recomputed = compute_root_digest(resources)
    if recomputed != root:
        raise InvalidBundleError(
            "inconsistent signature bundle: the subject digest does not match its resource list"
        )

    return Bundle(
        statement=statement,
        model_name=model_name,
        root_digest=root,
        resources=tuple(resources),
        serialization=serialization,
        ignore_paths_recorded=recorded,
        key_hint=key_hint,
        embedded_public_key_pem=embedded_pem,
        signatures=signatures,
        payload=payload,
        payload_type=payload_type,
        signed_sizes=signed_sizes,
    )


def _shard_size(ser: dict[str, Any]) -> int:
    """``shard_size``: a positive integer (model_signing writes it as a JSON float, 1000.0)."""
    if "shard_size" not in ser:
        raise InvalidBundleError(
            "corrupt signature bundle: a 'shards' serialization has no shard_size"
        )
    value = ser["shard_size"]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidBundleError("corrupt signature bundle: shard_size is not an integer")
    if not 1 <= value <= MAX_SHARD_SIZE:
        raise InvalidBundleError(
            f"corrupt signature bundle: shard_size {value} is not between 1 and {MAX_SHARD_SIZE}"
        )
    return value


# -- verification ----------------------------------------------------------------------------


def _summarise(label: str, names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    more = f", +{len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)} {label} ({shown}{more})"


@dataclass
class VerificationResult:
    """The outcome of checking a model against a bundle."""

    path: str
    key_id: str
    root_digest: str
    signature_ok: bool
    modified: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    model_name: str = ""
    files_checked: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.signature_ok
            and not self.modified
            and not self.missing
            and not self.extra
            and not self.errors
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "path": self.path,
            "model_name": self.model_name,
            "key_id": self.key_id,
            "root_digest": self.root_digest,
            "signature_ok": self.signature_ok,
            "files_checked": self.files_checked,
            "modified": list(self.modified),
            "missing": list(self.missing),
            "extra": list(self.extra),
            "errors": list(self.errors),
        }

    def summary(self) -> str:
        if self.ok:
            return f"verified {self.path}: {self.files_checked} files, key {self.key_id[:16]}"
        parts = list(self.errors)
        if self.modified:
            parts.append(_summarise("modified", self.modified))
        if self.missing:
            parts.append(_summarise("missing", self.missing))
        if self.extra:
            parts.append(_summarise("extra", self.extra))
        return f"verification failed for {self.path}: " + ", ".join(parts)

    def raise_for_failure(self) -> None:
        """Raise :class:`VerificationFailedError` (exit 3) unless everything checked out."""
        if not self.ok:
            raise VerificationFailedError(self.summary())


def verify_bundle(
    path: str | os.PathLike[str],
    bundle_text: str | bytes,
    public_key: PublicKey,
    *,
    ignore_paths: Iterable[str | os.PathLike[str]] = (),
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    cache: DigestCache | None = None,
    trust_cache: bool = False,
    check_bytes: bool = True,
) -> VerificationResult:
    """Check the model at ``path`` against ``bundle_text`` with ``public_key``.

    ``check_bytes=False`` checks only the signature over the manifest (no file is read).

    Raises :class:`InvalidBundleError` for a malformed bundle and the manifest builder's errors for
    unsafe or unreadable input; a mismatch is reported in the result (see ``raise_for_failure``).
    ``ignore_paths`` adds paths to ignore (e.g. the signature file when it sits in the model
    folder and the bundle did not record it). The digest cache is used only with ``trust_cache``.
    """
    bundle = parse_bundle(bundle_text)
    shown = str(path)
    result = VerificationResult(
        path=shown,
        key_id=public_key.key_id,
        root_digest=bundle.root_digest,
        signature_ok=False,
        model_name=bundle.model_name,
    )
    pae_bytes = pae(bundle.payload, bundle.payload_type)
    result.signature_ok = any(public_key.verify(sig, pae_bytes) for sig in bundle.signatures)
    if not result.signature_ok:
        if bundle.hint_matches(public_key) is False:
            result.errors.append(f"signed by a different key than {public_key.key_id[:16]}")
        else:
            result.errors.append(f"signature does not verify with key {public_key.key_id[:16]}")
        return result
    if not check_bytes:
        return result

    extra_ignores = [str(p) for p in ignore_paths]
    if bundle.ignore_paths_recorded:
        ignores = [*bundle.serialization.ignore_paths, *extra_ignores]
    else:
        ignores = [*DEFAULT_IGNORE_PATHS, *extra_ignores]
    ser = bundle.serialization
    actual = build_manifest(
        Path(path),
        ignore_paths=ignores,
        allow_symlinks=ser.allow_symlinks,
        workers=workers,
        progress=progress,
        cache=cache if trust_cache else None,
        default_ignores=False,
        hash_type=ser.hash_type,
        shard_size=ser.shard_size,
        signed_sizes=bundle.signed_sizes if ser.shard_size is not None else None,
    )
    expected = {r.name: r.digest for r in bundle.resources}
    found = actual.digests()
    if ser.shard_size is None:
        result.files_checked = len(found)
        result.modified = sorted(n for n in expected if n in found and found[n] != expected[n])
        result.missing = sorted(n for n in expected if n not in found)
        result.extra = sorted(n for n in found if n not in expected)
        return result
    _compare_shards(result, bundle, actual, expected, found)
    return result


def _compare_shards(
    result: VerificationResult,
    bundle: Bundle,
    actual: Manifest,
    expected: dict[str, str],
    found: dict[str, str],
) -> None:
    """Shard mode: files missing, extra or of another size (naming the first shard that differs),
    then every hashed shard against its signed digest."""
    shard_size = bundle.serialization.shard_size or 1
    signed = bundle.signed_sizes
    sizes = dict(actual.file_sizes)
    result.files_checked = len(sizes)
    result.missing = sorted(f for f in signed if f not in sizes)
    result.extra = sorted(f for f, size in sizes.items() if f not in signed and size > 0)
    for name, size in sorted(sizes.items()):
        want = signed.get(name)
        if want is None or want == size:
            continue
        first = min(size, want) // shard_size * shard_size
        index = first // shard_size
        if size < want:
            end = min(first + shard_size, want)
            result.errors.append(
                f"{name} is truncated: {size} of {want} signed bytes, "
                f"shard {index} ({first}:{end}) incomplete"
            )
            result.modified.append(f"{name}:{first}:{end}")
        else:
            end = min(first + shard_size, size)
            result.errors.append(
                f"{name} has grown: {size} bytes, {want} signed; shard {index} ({first}:{end}) "
                "differs"
            )
            result.modified.append(f"{name}:{first}:{end}" if first < want else name)
    result.modified.extend(n for n in expected if n in found and found[n] != expected[n])
    result.modified.sort()

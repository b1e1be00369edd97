"""Sign a local file or folder: hash, sign the manifest, record it, write the bundle.

:func:`sign_path` records through the store (SQLAlchemy, any database);
:mod:`assay.registry.sign_sqlite` records the same rows with stdlib ``sqlite3`` for the default
SQLite store (``assay sign`` then never imports SQLAlchemy). Both share :func:`hash_and_sign`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.atomic import staged_write
from assay.core.errors import NotFoundError
from assay.integrity.digest_cache import DigestCache
from assay.integrity.hashing import ProgressCallback
from assay.integrity.manifest import Manifest, build_manifest, default_signature_path
from assay.integrity.manifest import inner_ignores as _inner_ignores
from assay.integrity.oms import sign_manifest
from assay.integrity.prehash import Prehash, check_mode, requested_mode

if TYPE_CHECKING:
    from assay.integrity.keys import SigningKey
    from assay.registry.facade import Registry
    from assay.trust.policy import Policy


@dataclass
class SignResult:
    """What ``sign_path`` wrote."""

    path: str
    signature_path: str
    key_id: str
    root_digest: str
    files: int
    total_bytes: int
    serialization: str = "sha256"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Signed:
    """A manifest and its bundle, not yet recorded or written."""

    path: Path
    signature: Path
    manifest: Manifest
    bundle: str
    key_id: str
    cache: DigestCache | None

    @property
    def subject(self) -> str:
        return str(self.path.resolve())

    def audit_payload(self) -> dict[str, Any]:
        """The ``sign`` audit event's payload."""
        return {
            "root_digest": self.manifest.root_digest,
            "key_id": self.key_id,
            "files": self.manifest.file_count,
            "serialization": self.manifest.serialization.mode,
            "signature": str(self.signature.resolve()),
        }

    def result(self) -> SignResult:
        m = self.manifest
        return SignResult(
            path=str(self.path),
            signature_path=str(self.signature),
            key_id=self.key_id,
            root_digest=m.root_digest,
            files=m.file_count,
            total_bytes=m.total_size,
            serialization=m.serialization.mode,
        )


def check_target(path: Path, signature: Path | None) -> tuple[Path, Path]:
    """``(path, bundle path)``; ``NotFoundError`` when ``path`` does not exist."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path} does not exist")
    return path, Path(signature) if signature else default_signature_path(path)


def hash_and_sign(
    path: Path,
    signature: Path,
    signing_key: SigningKey,
    policy: Policy,
    *,
    home: Path,
    reuse_digests: bool = False,
    ignore_paths: tuple[str, ...] = (),
    progress: ProgressCallback | None = None,
    hash_type: str | None = None,
    shard_size: int | None = None,
    prehash: Prehash | None = None,
) -> Signed:
    """Hash ``path`` in the flags' mode (else the policy's ``signing:`` default), sign it."""
    mode = requested_mode(hash_type, shard_size)
    if mode is None:
        default = policy.signing
        mode = (default.hash, default.shard_size)
    check_mode(*mode)
    ignores = (*ignore_paths, *_inner_ignores(path, signature))
    cache = DigestCache.for_home(home) if reuse_digests else None
    if prehash is not None and prehash.matches(path, ignores, *mode):
        manifest = prehash.result()
    else:
        if prehash is not None:
            prehash.cancel()
        manifest = build_manifest(
            path,
            ignore_paths=list(ignores),
            cache=cache,
            fingerprints=cache is not None,
            progress=progress,
            hash_type=mode[0],
            shard_size=mode[1],
        )
    bundle = sign_manifest(manifest, signing_key)
    return Signed(path, signature, manifest, bundle, signing_key.key_id, cache)


def sign_path(
    registry: Registry,
    path: Path,
    *,
    key: str | None = None,
    signature: Path | None = None,
    reuse_digests: bool = False,
    ignore_paths: tuple[str, ...] = (),
    progress: ProgressCallback | None = None,
    hash_type: str | None = None,
    shard_size: int | None = None,
    prehash: Prehash | None = None,
) -> SignResult:
    """Hash ``path``, sign its manifest, record the signature, then write the bundle file.

    ``hash_type`` / ``shard_size`` choose the OMS serialization (``shard_size`` alone: sha256
    shards); with neither, the policy's ``signing:`` default applies. ``prehash`` is a manifest
    already being built (see :mod:`assay.integrity.prehash`), used when it has the same mode.

    The bundle is staged beside its destination first (an unwritable destination fails before
    anything is recorded), the store is updated, then the staged file atomically replaces the
    destination: a failure leaves either no new file or a complete one.
    """
    from sqlalchemy import select

    from assay.store.models import Artifact, Signature, utcnow

    path, signature = check_target(path, signature)
    policy = registry.policy()
    signing_key, _record = registry.keys.signing_key(key, role=policy.role_for("register"))
    signed = hash_and_sign(
        path,
        signature,
        signing_key,
        policy,
        home=registry.settings.home,
        reuse_digests=reuse_digests,
        ignore_paths=ignore_paths,
        progress=progress,
        hash_type=hash_type,
        shard_size=shard_size,
        prehash=prehash,
    )
    manifest, subject = signed.manifest, signed.subject
    # Stage the bundle first: a folder that cannot be written fails before the store changes;
    # the file replaces any old bundle only once the store has committed.
    with (
        staged_write(signature, signed.bundle.encode("utf-8")),
        registry.store.session() as session,
    ):
        artifact = session.scalar(
            select(Artifact).where(
                Artifact.kind == "path", Artifact.name == subject, Artifact.version.is_(None)
            )
        )
        if artifact is None:
            artifact = Artifact(kind="path", name=subject, uri=subject, created_at=utcnow())
            session.add(artifact)
        artifact.manifest_root = manifest.root_digest
        session.flush()
        session.add(
            Signature(
                artifact_id=artifact.id,
                subject=subject,
                manifest_root=manifest.root_digest,
                key_id=signing_key.key_id,
                bundle=signed.bundle,
                recorded_at=utcnow(),
            )
        )
        registry.record(session, "sign", f"path:{subject}", signed.audit_payload())
    if signed.cache is not None:
        signed.cache.save()
    return signed.result()

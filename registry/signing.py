"""Sign a local file or folder: hash, sign the manifest, record it, write the bundle."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assay.core.atomic import staged_write
from assay.core.errors import NotFoundError
from assay.registry.digest_cache import DigestCache
from assay.registry.hashing import ProgressCallback
from assay.registry.manifest import build_manifest
from assay.registry.models import Artifact, Signature, utcnow
from assay.registry.oms import sign_manifest
from assay.registry.prehash import Prehash, check_mode, requested_mode
from assay.registry.verification import default_signature_path, signature_ignores

if TYPE_CHECKING:
    from assay.registry.facade import Registry


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
    already being built (see :mod:`assay.registry.prehash`), used when it has the same mode.

    The bundle is staged beside its destination first (an unwritable destination fails before
    anything is recorded), the store is updated, then the staged file atomically replaces the
    destination: a failure leaves either no new file or a complete one.
    """
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path} does not exist")
    signature = Path(signature) if signature else default_signature_path(path)
    signing_key, _record = registry.keys.signing_key(
        key, role=registry.policy().role_for("register")
    )
    mode = requested_mode(hash_type, shard_size)
    if mode is None:
        default = registry.policy().signing
        mode = (default.hash, default.shard_size)
    check_mode(*mode)
    ignores = (*ignore_paths, *signature_ignores(path, signature))
    cache = DigestCache.for_home(registry.settings.home) if reuse_digests else None
    if prehash is not None and prehash.matches(path, ignores, *mode):
        manifest = prehash.result()
    else:
        if prehash is not None:
            prehash.cancel()
        manifest = build_manifest(
            path,
            ignore_paths=list(ignores),
            cache=cache,
            progress=progress,
            hash_type=mode[0],
            shard_size=mode[1],
        )
    bundle = sign_manifest(manifest, signing_key)
    subject = str(path.resolve())
    # Stage the bundle first: a folder that cannot be written fails before the store changes;
    # the file replaces any old bundle only once the store has committed.
    with staged_write(signature, bundle.encode("utf-8")), registry.store.session() as session:
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
                bundle=bundle,
                recorded_at=utcnow(),
            )
        )
        registry.record(
            session,
            "sign",
            f"path:{subject}",
            {
                "root_digest": manifest.root_digest,
                "key_id": signing_key.key_id,
                "files": manifest.file_count,
                "serialization": manifest.serialization.mode,
                "signature": str(signature.resolve()),
            },
        )
    if cache is not None:
        cache.save()
    return SignResult(
        path=str(path),
        signature_path=str(signature),
        key_id=signing_key.key_id,
        root_digest=manifest.root_digest,
        files=manifest.file_count,
        total_bytes=manifest.total_size,
        serialization=manifest.serialization.mode,
    )

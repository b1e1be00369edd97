"""Datasets: versioned, hashed, signed and stored in MLflow's artifact store like models.

``register_dataset`` logs the files to an MLflow run (so the bytes can be re-read later), signs
their manifest, and records version N in the store with its bundle and an audit event.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError as DbIntegrityError

from assay.core.errors import AssayError, NotFoundError
from assay.core.refs import DatasetRef, check_name
from assay.core.tags import DATASET_TAG, KIND_TAG, MANIFEST_TAG
from assay.integrity.manifest import build_manifest
from assay.integrity.oms import sign_manifest
from assay.registry.versions import (
    VersionRecord,
    display,
    list_records,
    next_version,
    record_of,
    require_artifact,
)
from assay.store.models import Artifact, ArtifactState, Signature, utcnow
from assay.trust.binding import SUBJECT_PREFIX, make_binding

if TYPE_CHECKING:
    from assay.integrity.hashing import ProgressCallback
    from assay.registry.facade import Registry

_RETRIES = 20


def register_dataset(
    registry: Registry, name: str, path: Path, *, progress: ProgressCallback | None = None
) -> VersionRecord:
    """Hash, sign, upload and record the next version of dataset ``name``."""
    check_name(name, "dataset")
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path} does not exist")
    key, _ = registry.keys.signing_key(role=registry.policy().role_for("register"))
    with _as_folder(registry, path) as folder:
        # MLflow stores a single file inside the ``dataset`` folder: sign that same layout.
        manifest = build_manifest(folder, progress=progress)
        bundle = sign_manifest(manifest, key)
        logged = registry.backend.log_model_dir(
            folder,
            artifact_path="dataset",
            run_name=f"dataset-{name}",
            tags={
                KIND_TAG: "dataset",
                DATASET_TAG: name,
                MANIFEST_TAG: manifest.root_digest,
            },
        )
    for _attempt in range(_RETRIES):
        try:
            with registry.store.session() as session:
                version = next_version(session, "dataset", name)
                subject = display("dataset", name, version)
                artifact = Artifact(
                    kind="dataset",
                    name=name,
                    version=version,
                    uri=logged.source_uri,
                    manifest_root=manifest.root_digest,
                    created_at=utcnow(),
                )
                session.add(artifact)
                session.flush()
                session.add(
                    ArtifactState(
                        artifact_id=artifact.id,
                        state="registered",
                        status="complete",
                        run_id=logged.run_id,
                        source=logged.source_uri,
                        labels="[]",
                        updated_at=utcnow(),
                    )
                )
                now = utcnow()
                binding = make_binding(
                    key,
                    subject=subject,
                    manifest_root=manifest.root_digest,
                    lineage={
                        "kind": "dataset",
                        "name": name,
                        "version": version,
                        "files": len(manifest.resources),
                    },
                )
                for sub, text in ((subject, bundle), (SUBJECT_PREFIX + subject, binding)):
                    session.add(
                        Signature(
                            artifact_id=artifact.id,
                            subject=sub,
                            manifest_root=manifest.root_digest,
                            key_id=key.key_id,
                            bundle=text,
                            recorded_at=now,
                        )
                    )
                registry.record(
                    session,
                    "dataset.register",
                    subject,
                    {
                        "root_digest": manifest.root_digest,
                        "files": len(manifest.resources),
                        "bytes": manifest.total_size,
                        "key_id": key.key_id,
                        "run_id": logged.run_id,
                    },
                )
                session.flush()
                return record_of(session, artifact)
        except AssayError as exc:
            if not isinstance(exc.__cause__, DbIntegrityError):
                raise
    raise AssayError(f"could not allocate a version for dataset {name!r}: too much contention")


@contextmanager
def _as_folder(registry: Registry, path: Path) -> Iterator[Path]:
    """``path`` itself when it is a folder; else a staging folder holding the file (a hard link
    when possible), so the manifest names the file as MLflow will store it."""
    if not path.is_file():
        yield path
        return
    staging_root = registry.settings.home / "staging"
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="dataset-", dir=staging_root))
    try:
        target = staging / path.name
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def list_datasets(registry: Registry, name: str | None = None) -> list[VersionRecord]:
    with registry.store.session(readonly=True) as session:
        return list_records(session, "dataset", name)


def show_dataset(registry: Registry, ref: DatasetRef) -> VersionRecord:
    with registry.store.session(readonly=True) as session:
        return record_of(session, require_artifact(session, "dataset", ref.name, ref.version))

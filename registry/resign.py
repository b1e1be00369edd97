"""Re-sign a registered version with another key (after a signing key is compromised).

The version's bytes are re-read from the artifact store and must still match the manifest root
recorded at registration: assay never re-signs bytes it cannot vouch for. The new OMS bundle and
registration binding are recorded beside the old ones (the newest is what verification uses).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from assay.core.atomic import atomic_write
from assay.core.errors import AssayError, IntegrityError
from assay.core.tags import KEY_ID_TAG
from assay.integrity.manifest import build_manifest
from assay.integrity.oms import sign_manifest
from assay.mlflow_access.artifacts import artifact_files
from assay.mlflow_access.base import MLFLOW_ADDED_FILES
from assay.registry.versions import display, latest_signature, require_artifact
from assay.store.models import ArtifactState, Signature, utcnow
from assay.trust.binding import SUBJECT_PREFIX, binding_lineage, make_binding

if TYPE_CHECKING:
    from assay.registry.facade import Registry


@dataclass
class ResignOutcome:
    ref: str
    resigned: bool
    key_id: str


def resign_version(
    registry: Registry, name: str, version: str, *, key: str | None = None, reason: str
) -> ResignOutcome:
    """Sign ``models:/name/version`` again with ``key`` (default: the active signing key)."""
    signing_key, _ = registry.keys.signing_key(key, role=registry.policy().role_for("register"))
    subject = display("model", name, version)
    with registry.store.session(readonly=True) as session:
        artifact = require_artifact(session, "model", name, version)
        latest = latest_signature(session, artifact.id, subject)
        binding_row = latest_signature(session, artifact.id, SUBJECT_PREFIX + subject)
        state = session.get(ArtifactState, artifact.id)
        uri, root = artifact.uri or "", artifact.manifest_root
        run_id = state.run_id if state else None
    if latest is not None and latest.key_id == signing_key.key_id:
        return ResignOutcome(subject, False, signing_key.key_id)
    with artifact_files(registry.backend, uri, subject) as path:
        manifest = build_manifest(path, ignore_paths=sorted(MLFLOW_ADDED_FILES))
    if manifest.root_digest != root:
        raise IntegrityError(
            f"{subject}: its bytes no longer match what was registered; not re-signing"
        )
    bundle = sign_manifest(manifest, signing_key)
    lineage = binding_lineage(binding_row.bundle) if binding_row else {}
    binding = make_binding(signing_key, subject=subject, manifest_root=root or "", lineage=lineage)
    now = utcnow()
    with registry.store.session() as session:
        artifact = require_artifact(session, "model", name, version)
        for sub, text in ((subject, bundle), (SUBJECT_PREFIX + subject, binding)):
            session.add(
                Signature(
                    artifact_id=artifact.id,
                    subject=sub,
                    manifest_root=root or "",
                    key_id=signing_key.key_id,
                    bundle=text,
                    recorded_at=now,
                )
            )
        registry.record(
            session,
            "model.resign",
            subject,
            {
                "key_id": signing_key.key_id,
                "previous_key_id": latest.key_id if latest else None,
                "reason": reason,
            },
        )
    # Best effort mirrors: the store is the truth.
    with contextlib.suppress(AssayError):
        registry.backend.set_version_tag(name, version, KEY_ID_TAG, signing_key.key_id)
        if run_id:
            with tempfile.TemporaryDirectory() as tmp:
                bundle_path = atomic_write(Path(tmp) / "model.sig", bundle.encode("utf-8"))
                registry.backend.log_artifact_file(run_id, bundle_path, "assay")
    return ResignOutcome(subject, True, signing_key.key_id)

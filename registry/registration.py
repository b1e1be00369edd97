"""Register a model version: stage, watermark, sign, log to MLflow, record, then serve.

The order makes an interrupted registration safe to re-run (DESIGN §7, issue 3):

1. stage the source into ``$ASSAY_HOME/staging`` (the user's files are never modified);
2. embed the ownership watermark into the staged weights (the seam in ``watermarking.py``); a
   model with no weight file at all (scikit-learn) is signed without one, and says so;
3. hash and sign the staged bytes; their manifest root identifies this registration;
4. log them to an MLflow run and create the version, tagged ``assay.pending=<root>``;
5. in ONE store transaction: artifact, state, bundle, binding statement, lineage, watermark
   record and the audit event;
6. mirror tags, store the bundle beside the model in MLflow, set the alias if asked.

A version exists in the store only after step 5, and an alias is set only after it, so a crash
never leaves a half-registered version serving. Re-running the same registration adopts the
pending MLflow version (step 4 done) or returns the recorded one (step 5 done) and finishes 6.

An upload that fails ends its MLflow run as FAILED (the backends' ``log_model_dir``; the CLI turns
SIGTERM into an exception so that happens on a cancelled CI job too). A run left RUNNING by a
process that died outright (kill -9, power cut) is ended as FAILED by the next registration of
the same bytes (:func:`end_orphaned_runs`), which then uploads afresh.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assay.core.atomic import atomic_write
from assay.core.errors import AssayError, NotFoundError, RefusedError
from assay.core.refs import DatasetRef, ModelRef, check_name
from assay.core.tags import (
    KEY_ID_TAG,
    MANIFEST_TAG,
    MODEL_TAG,
    PENDING_TAG,
    REGISTRAR_TAG,
    STATE_TAG,
)
from assay.integrity.manifest import build_manifest
from assay.integrity.oms import sign_manifest
from assay.mlflow_access.base import MLFLOW_ADDED_FILES
from assay.registry.versions import display, record_of, require_artifact
from assay.store.models import (
    BAD_STATES,
    Artifact,
    ArtifactState,
    Lineage,
    Signature,
    WatermarkRow,
    utcnow,
)
from assay.trust.binding import SUBJECT_PREFIX, make_binding

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.integrity.hashing import ProgressCallback
    from assay.mlflow_access.base import ModelVersionInfo
    from assay.registry.facade import Registry
    from assay.registry.watermarking import WatermarkOutcome

log = logging.getLogger(__name__)

BUNDLE_ARTIFACT_DIR = "assay"
BUNDLE_FILE = "model.sig"


@dataclass
class RegisterResult:
    """What ``register_model`` did."""

    name: str
    version: str
    manifest_root: str
    key_id: str
    run_id: str | None
    source: str | None
    datasets: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    alias: str | None = None
    watermark: dict[str, Any] | None = None
    #: Why there is no watermark (``watermark`` is None): e.g. "none (no weight tensors)".
    watermark_note: str | None = None
    reused: bool = False

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uri": self.uri}


def _resolve_datasets(session: Session, refs: list[DatasetRef]) -> list[Artifact]:
    found = []
    for ref in refs:
        artifact = require_artifact(session, "dataset", ref.name, ref.version)
        state = session.get(ArtifactState, artifact.id)
        if state is not None and state.state in BAD_STATES:
            raise RefusedError(
                f"dataset {ref.name}@{artifact.version} is {state.state} ({state.reason}): "
                "refusing to register a model trained on it"
            )
        found.append(artifact)
    return found


def _stage(registry: Registry, source: str, staging: Path) -> Path:
    """Copy or download ``source`` into ``staging/model`` and return that folder."""
    target = staging / "model"
    if source.startswith(("runs:/", "models:/")):
        try:
            registry.backend.download_uri(source, target)
        except AssayError:
            raise
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types
            raise NotFoundError(f"cannot fetch {source} from MLflow: {exc}") from exc
        for added in MLFLOW_ADDED_FILES:
            (target / added).unlink(missing_ok=True)
        return target
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFoundError(f"model source {source} does not exist")
    if path.is_symlink():
        raise RefusedError(f"model source {source} is a symbolic link; give the real path")
    if path.is_dir():
        shutil.copytree(path, target, symlinks=True)
    else:
        target.mkdir(parents=True)
        shutil.copy2(path, target / path.name)
    return target


def _find_pending(registry: Registry, name: str, root: str) -> ModelVersionInfo | None:
    """An MLflow version left by an interrupted registration of the same bytes."""
    try:
        versions = registry.backend.list_versions(name)
    except NotFoundError:
        return None
    for info in versions:
        if info.tags.get(PENDING_TAG) == root:
            # Tags are never trusted (DESIGN §4): adopt only if the stored bytes are these bytes.
            if _holds_root(registry, info, root):
                return info
            log.warning(
                "ignoring pending version %s of %s: its files are not the bytes being registered",
                info.version,
                name,
            )
    return None


def _holds_root(registry: Registry, info: ModelVersionInfo, root: str) -> bool:
    from assay.mlflow_access.artifacts import artifact_files

    try:
        with artifact_files(
            registry.backend, info.source, f"models:/{info.name}/{info.version}"
        ) as path:
            found = build_manifest(path, ignore_paths=tuple(MLFLOW_ADDED_FILES)).root_digest
    except AssayError:
        return False
    return found == root


def _registrar() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive_here(registrar: str | None) -> bool:
    """Whether ``host:pid`` names another process still running on this host."""
    host, _, text = (registrar or "").rpartition(":")
    if host != socket.gethostname() or not (text.isascii() and text.isdigit()) or len(text) > 10:
        return False
    pid = int(text)
    if not 0 < pid < 1 << 31 or pid == os.getpid():  # 0 would name our whole process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def end_orphaned_runs(registry: Registry, tags: dict[str, str]) -> list[str]:
    """End as FAILED the RUNNING registration runs of these bytes that an interrupted process
    left behind; return their ids. A run whose uploader still runs on this host is left alone
    (another registration of the same bytes in progress)."""
    ended = []
    for run in registry.backend.running_runs(tags):
        if _alive_here(run.tags.get(REGISTRAR_TAG)):
            continue
        registry.backend.end_run(run.run_id, "FAILED")
        log.warning(
            "ended MLflow run %s as FAILED: an interrupted registration left it RUNNING", run.run_id
        )
        ended.append(run.run_id)
    return ended


def _existing(session: Session, name: str, root: str) -> Artifact | None:
    rows = session.scalars(
        select(Artifact).where(
            Artifact.kind == "model", Artifact.name == name, Artifact.manifest_root == root
        )
    )
    return next(iter(rows), None)


def register_model(
    registry: Registry,
    name: str,
    source: str,
    *,
    datasets: list[DatasetRef] | None = None,
    parents: list[ModelRef] | None = None,
    alias: str | None = None,
    watermark: bool = True,
    watermark_strength: float | None = None,
    progress: ProgressCallback | None = None,
) -> RegisterResult:
    """Register ``source`` (folder, file, ``runs:/`` or ``models:/m-...``) as a version of ``name``."""
    check_name(name)
    datasets, parents = list(datasets or []), list(parents or [])
    with registry.store.session(readonly=True) as session:
        dataset_rows = _resolve_datasets(session, datasets)
        parent_rows = [
            require_artifact(session, "model", p.name, p.version) for p in parents if p.version
        ]
        if any(p.version is None for p in parents):
            raise AssayError("--parent needs NAME/VERSION")
        dataset_info = [
            {"name": a.name, "version": a.version, "root": a.manifest_root} for a in dataset_rows
        ]
        parent_info = [
            {"name": a.name, "version": a.version, "root": a.manifest_root} for a in parent_rows
        ]
        dataset_ids = [a.id for a in dataset_rows]
        parent_ids = [a.id for a in parent_rows]
    key, _ = registry.keys.signing_key(role=registry.policy().role_for("register"))

    staging_root = registry.settings.home / "staging"
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{uuid.uuid4().hex[:8]}-", dir=staging_root))
    try:
        folder = _stage(registry, source, staging)
        outcome, note = _watermark(registry, folder, watermark, watermark_strength)
        manifest = build_manifest(folder, progress=progress)
        root = manifest.root_digest
        bundle = sign_manifest(manifest, key)

        with registry.store.session(readonly=True) as session:
            done = _existing(session, name, root)
            done_version = done.version if done is not None else None
        if done_version is not None:
            result = _result_from_store(registry, name, done_version, key.key_id, reused=True)
        else:
            pending = _find_pending(registry, name, root)
            if pending is None:
                run_tags = {MODEL_TAG: name, MANIFEST_TAG: root}
                try:
                    end_orphaned_runs(registry, run_tags)
                except AssayError as exc:  # housekeeping: never blocks the registration
                    log.warning("could not look for runs an interrupted registration left: %s", exc)
                logged = registry.backend.log_model_dir(
                    folder,
                    artifact_path="model",
                    run_name=f"{name}-register",
                    tags={**run_tags, REGISTRAR_TAG: _registrar()},
                )
                info = registry.backend.create_version(
                    name,
                    logged.source_uri,
                    run_id=logged.run_id,
                    tags={PENDING_TAG: root, STATE_TAG: "pending"},
                )
            else:
                log.info("adopting version %s left by an interrupted registration", pending.version)
                info = pending
            result = _record(
                registry,
                name,
                info,
                manifest_root=root,
                bundle=bundle,
                key=key,
                dataset_ids=dataset_ids,
                parent_ids=parent_ids,
                lineage={"datasets": dataset_info, "parents": parent_info},
                outcome=outcome,
                files=len(manifest.resources),
            )
        if result.watermark is None:
            result.watermark_note = note
        _finish(registry, result, bundle, staging)
        if alias:
            from assay.registry.states import move_alias

            move_alias(
                registry, name, alias, result.version, via="register", reason="set at registration"
            )
            result.alias = alias
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _watermark(
    registry: Registry, folder: Path, enabled: bool, strength: float | None
) -> tuple[WatermarkOutcome | None, str | None]:
    """Step 2: embed into the staged weights; else None and why (no weights, turned off...)."""
    from assay.registry import watermarking

    if not enabled:
        return None, watermarking.TURNED_OFF
    if not watermarking.watermark_available():
        return None, watermarking.NOT_INSTALLED
    outcome = watermarking.embed_into_folder(registry, folder, strength=strength)
    return outcome, (None if outcome is not None else watermarking.NO_WEIGHTS)


def _record(
    registry: Registry,
    name: str,
    info: ModelVersionInfo,
    *,
    manifest_root: str,
    bundle: str,
    key: Any,
    dataset_ids: list[int],
    parent_ids: list[int],
    lineage: dict[str, Any],
    outcome: WatermarkOutcome | None,
    files: int,
) -> RegisterResult:
    """Step 5: everything the store keeps about the new version, in one transaction."""
    subject = display("model", name, info.version)
    binding = make_binding(
        key,
        subject=subject,
        manifest_root=manifest_root,
        lineage={
            "kind": "model",
            "name": name,
            "version": info.version,
            "run_id": info.run_id,
            **lineage,
        },
    )
    now = utcnow()
    with registry.store.session() as session:
        artifact = Artifact(
            kind="model",
            name=name,
            version=info.version,
            uri=info.source,
            manifest_root=manifest_root,
            created_at=now,
        )
        session.add(artifact)
        session.flush()
        session.add(
            ArtifactState(
                artifact_id=artifact.id,
                state="registered",
                status="complete",
                run_id=info.run_id,
                source=info.source,
                labels="[]",
                updated_at=now,
            )
        )
        for sub, text in ((subject, bundle), (SUBJECT_PREFIX + subject, binding)):
            session.add(
                Signature(
                    artifact_id=artifact.id,
                    subject=sub,
                    manifest_root=manifest_root,
                    key_id=key.key_id,
                    bundle=text,
                    recorded_at=now,
                )
            )
        for parent_id in dataset_ids:
            session.add(Lineage(child_id=artifact.id, parent_id=parent_id, relation="trained-on"))
        for parent_id in parent_ids:
            session.add(
                Lineage(child_id=artifact.id, parent_id=parent_id, relation="fine-tuned-from")
            )
        if outcome is not None:
            session.add(
                WatermarkRow(
                    artifact_id=artifact.id,
                    secret_fingerprint=outcome.secret_fingerprint,
                    record=json.dumps(outcome.record),
                    shapes=json.dumps(outcome.shapes),
                    parameters=outcome.parameters,
                    created_at=now,
                )
            )
            from assay.registry.sketch_index import index_version

            index_version(session, artifact.id, outcome.secret_fingerprint, outcome.record)
        registry.record(
            session,
            "model.register",
            subject,
            {
                "root_digest": manifest_root,
                "files": files,
                "key_id": key.key_id,
                "run_id": info.run_id,
                "datasets": lineage["datasets"],
                "parents": lineage["parents"],
                "watermark": outcome.audit_payload() if outcome else None,
            },
        )
    return _result_from_store(
        registry, name, info.version, key.key_id, reused=False, outcome=outcome
    )


def _result_from_store(
    registry: Registry,
    name: str,
    version: str,
    key_id: str,
    *,
    reused: bool,
    outcome: WatermarkOutcome | None = None,
) -> RegisterResult:
    with registry.store.session(readonly=True) as session:
        record = record_of(session, require_artifact(session, "model", name, version))
        wm = session.get(WatermarkRow, require_artifact(session, "model", name, version).id)
    watermark = (
        outcome.summary()
        if outcome
        else ({"secret_fingerprint": wm.secret_fingerprint} if wm else None)
    )
    return RegisterResult(
        name=name,
        version=version,
        manifest_root=record.manifest_root or "",
        key_id=record.key_id or key_id,
        run_id=record.run_id,
        source=record.source,
        datasets=record.datasets,
        parents=record.parents,
        watermark=watermark,
        reused=reused,
    )


def _finish(registry: Registry, result: RegisterResult, bundle: str, staging: Path) -> None:
    """Step 6 (idempotent): the bundle beside the model in MLflow and the mirrored tags."""
    backend = registry.backend
    if result.run_id:
        bundle_path = staging / BUNDLE_ARTIFACT_DIR / BUNDLE_FILE
        atomic_write(bundle_path, bundle.encode("utf-8"))
        backend.log_artifact_file(result.run_id, bundle_path, BUNDLE_ARTIFACT_DIR)
    with registry.store.session(readonly=True) as session:
        record = record_of(session, require_artifact(session, "model", result.name, result.version))
    for tag, value in (
        (STATE_TAG, record.state),
        (MANIFEST_TAG, record.manifest_root or ""),
        (KEY_ID_TAG, record.key_id or ""),
    ):
        backend.set_version_tag(result.name, result.version, tag, value)
    backend.delete_version_tag(result.name, result.version, PENDING_TAG)

"""Verify registered versions by URI: ``models:/NAME/V``, ``models:/NAME@ALIAS``, ``dataset:NAME@V``.

The real bytes are re-read from the artifact store and checked against the bundle the store
recorded at registration, with the trusted key and the signing-time rule, and the registration
binding is checked to name this very version (no replayed bundle).

Two ways to read the store: through a ``Registry`` (SQLAlchemy, any store URL), or, for
:func:`verify_target` with the default SQLite store, through ``assay.registry.fast_read``'s
``sqlite3`` view; with an embedded ``sqlite:///`` MLflow an alias is read the same way and a local
artifact store is read in place, so ``assay verify models:/x@production`` imports neither
SQLAlchemy nor mlflow.
"""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from assay.core.errors import IntegrityError, NotFoundError
from assay.core.refs import is_dataset_uri, parse_dataset_ref, parse_model_ref
from assay.integrity.oms import parse_bundle
from assay.mlflow_access.artifacts import artifact_files
from assay.mlflow_access.base import MLFLOW_ADDED_FILES, open_backend
from assay.mlflow_access.embedded import EmbeddedBackend
from assay.registry.fast_read import SignedArtifact, open_store_view, read_alias
from assay.store.sqlite_readonly import parse_utc
from assay.store.version_record import display
from assay.trust.binding import SUBJECT_PREFIX, check_binding
from assay.trust.policy import POLICY_SUBJECT, evaluate_policy
from assay.trust.signed_changes import CHANGE_PREFIX, StateEvent
from assay.trust.verification import VerifyReport, verify_bundle_text

if TYPE_CHECKING:
    from assay.core.settings import Settings
    from assay.integrity.hashing import ProgressCallback
    from assay.integrity.keys import PublicKey
    from assay.mlflow_access.base import MlflowBackend
    from assay.registry.facade import Registry
    from assay.registry.fast_read import SqliteStoreView
    from assay.registry.trust_view import TrustView
    from assay.trust.key_records import KeyRecord
    from assay.trust.policy import Policy
    from assay.trust.trust_list import TrustList

    class _Trust(TrustView, Protocol):
        def public_key(self, key_id: str) -> PublicKey | None: ...

        def record_of(self, key_id: str) -> KeyRecord | None: ...

        def trust_list(self) -> TrustList: ...


class _Reads(Protocol):
    """What verifying by URI reads: the store's rows, the trusted keys, MLflow."""

    settings: Settings

    @property
    def trust(self) -> _Trust: ...

    @property
    def backend(self) -> MlflowBackend: ...

    def signed_artifact(self, kind: str, name: str, version: str | None) -> SignedArtifact: ...


class _DecisionReads:
    """What the enforcement decision reads besides the bytes (shared by both read paths)."""

    def verify(
        self,
        kind: str,
        name: str,
        version: str,
        *,
        local_path: Path | None = None,
        progress: ProgressCallback | None = None,
        check_bytes: bool = True,
    ) -> VerifyReport:
        return _verify_artifact(
            self,
            kind,
            name,
            version,
            local_path=local_path,
            progress=progress,  # type: ignore[arg-type]
            check_bytes=check_bytes,
        )


class RegistryReads(_DecisionReads):
    """Through the ``Registry``: SQLAlchemy for the store, its backend for MLflow."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.settings = registry.settings
        self._rows: dict[tuple[str, str, str], tuple[str, datetime] | None] = {}

    @property
    def trust(self) -> _Trust:
        return self.registry.keys

    @property
    def backend(self) -> MlflowBackend:
        return self.registry.backend

    def signed_artifact(self, kind: str, name: str, version: str | None) -> SignedArtifact:
        from assay.registry.versions import latest_signature, require_artifact

        with self.registry.store.session(readonly=True) as session:
            artifact = require_artifact(session, kind, name, version)
            subject = display(kind, name, artifact.version)
            bundle = latest_signature(session, artifact.id, subject)
            binding = latest_signature(session, artifact.id, SUBJECT_PREFIX + subject)
            return SignedArtifact(
                subject=subject,
                uri=artifact.uri,
                bundle=bundle.bundle if bundle else None,
                manifest_root=bundle.manifest_root if bundle else "",
                binding=binding.bundle if binding else None,
                binding_key=binding.key_id if binding else None,
            )

    def policy(self, trust: TrustList) -> Policy:
        from sqlalchemy import select

        from assay.store.models import Signature

        with self.registry.store.session(readonly=True) as session:
            rows = session.scalars(
                select(Signature.bundle).where(Signature.subject == POLICY_SUBJECT)
            )
            return evaluate_policy(list(rows), trust)

    def state(self, kind: str, name: str, version: str) -> tuple[str, str] | None:
        from assay.registry.versions import find_artifact
        from assay.store.models import ArtifactState

        with self.registry.store.session(readonly=True) as session:
            artifact = find_artifact(session, kind, name, version)
            if artifact is None:
                return None
            row = session.get(ArtifactState, artifact.id)
            return (row.state, row.status) if row else ("registered", "complete")

    def _artifact(self, kind: str, name: str, version: str) -> tuple[str, datetime] | None:
        """(manifest_root, created_at) of a version, read once per decision."""
        from assay.registry.versions import find_artifact

        key = (kind, name, version)
        if key not in self._rows:
            with self.registry.store.session(readonly=True) as session:
                artifact = find_artifact(session, kind, name, version)
                self._rows[key] = (
                    (artifact.manifest_root, artifact.created_at) if artifact else None
                )
        return self._rows[key]

    def manifest_root(self, kind: str, name: str, version: str) -> str | None:
        row = self._artifact(kind, name, version)
        return row[0] if row else None

    def registered_at(self, kind: str, name: str, version: str) -> datetime | None:
        row = self._artifact(kind, name, version)
        return row[1] if row else None

    def is_managed(self, kind: str, name: str) -> bool:
        from sqlalchemy import select

        from assay.store.models import Artifact

        with self.registry.store.session(readonly=True) as session:
            found = session.scalar(
                select(Artifact.id).where(Artifact.kind == kind, Artifact.name == name).limit(1)
            )
            return found is not None

    def change_envelopes(self, subject: str) -> list[tuple[str, datetime | None]]:
        from sqlalchemy import select

        from assay.store.models import Signature

        with self.registry.store.session(readonly=True) as session:
            rows = session.execute(
                select(Signature.bundle, Signature.recorded_at).where(
                    Signature.subject == CHANGE_PREFIX + subject
                )
            ).all()
            return [(bundle, recorded_at) for bundle, recorded_at in rows]

    def state_event(self, kind: str, subject: str) -> StateEvent | None:
        from sqlalchemy import select

        from assay.store.models import AuditEvent

        with self.registry.store.session(readonly=True) as session:
            row = session.execute(
                select(AuditEvent.seq, AuditEvent.payload)
                .where(AuditEvent.action == f"{kind}.state", AuditEvent.subject == subject)
                .order_by(AuditEvent.seq.desc())
                .limit(1)
            ).first()
        return StateEvent.from_row(row[0], row[1]) if row else None


class _SqliteReads(_DecisionReads):
    """Through the ``sqlite3`` view of the store; MLflow's backend only if it is needed."""

    def __init__(self, settings: Settings, view: SqliteStoreView) -> None:
        self.settings = settings
        self.view = view
        #: Artifact rows read during this decision: ``state`` and ``manifest_root`` ask for the
        #: same row, which is read once.
        self._rows: dict[tuple[str, str, str], tuple | None] = {}

    @property
    def trust(self) -> _Trust:
        return self.view.trust

    @cached_property
    def backend(self) -> MlflowBackend:
        return open_backend(self.settings)

    def signed_artifact(self, kind: str, name: str, version: str | None) -> SignedArtifact:
        return self.view.signed_artifact(kind, name, version)

    def _bundles(self, subject: str) -> list[str]:
        rows = self.view.conn.execute(
            "SELECT bundle FROM signatures WHERE subject = ?", (subject,)
        ).fetchall()
        return [r[0] for r in rows]

    def policy(self, trust: TrustList) -> Policy:
        return evaluate_policy(self._bundles(POLICY_SUBJECT), trust)

    def _artifact(self, kind: str, name: str, version: str) -> tuple | None:
        key = (kind, name, version)
        if key not in self._rows:
            self._rows[key] = self.view.conn.execute(
                "SELECT id, manifest_root, created_at FROM artifacts"
                " WHERE kind = ? AND name = ? AND version = ?",
                key,
            ).fetchone()
        return self._rows[key]

    def state(self, kind: str, name: str, version: str) -> tuple[str, str] | None:
        artifact = self._artifact(kind, name, version)
        if artifact is None:
            return None
        row = self.view.conn.execute(
            "SELECT state, status FROM artifact_states WHERE artifact_id = ?", (artifact[0],)
        ).fetchone()
        return (row[0], row[1]) if row else ("registered", "complete")

    def manifest_root(self, kind: str, name: str, version: str) -> str | None:
        artifact = self._artifact(kind, name, version)
        return artifact[1] if artifact else None

    def registered_at(self, kind: str, name: str, version: str) -> datetime | None:
        artifact = self._artifact(kind, name, version)
        return parse_utc(artifact[2]) if artifact else None

    def is_managed(self, kind: str, name: str) -> bool:
        row = self.view.conn.execute(
            "SELECT 1 FROM artifacts WHERE kind = ? AND name = ? LIMIT 1", (kind, name)
        ).fetchone()
        return row is not None

    def change_envelopes(self, subject: str) -> list[tuple[str, datetime | None]]:
        rows = self.view.conn.execute(
            "SELECT bundle, recorded_at FROM signatures WHERE subject = ?",
            (CHANGE_PREFIX + subject,),
        ).fetchall()
        return [(bundle, parse_utc(recorded_at)) for bundle, recorded_at in rows]

    def state_event(self, kind: str, subject: str) -> StateEvent | None:
        row = self.view.conn.execute(
            "SELECT seq, payload FROM audit_events WHERE action = ? AND subject = ?"
            " ORDER BY seq DESC LIMIT 1",
            (f"{kind}.state", subject),
        ).fetchone()
        return StateEvent.from_row(row[0], row[1]) if row else None


def _alias_version(tracking_uri: str, backend: MlflowBackend, name: str, alias: str) -> str:
    """The version ``alias`` points at: read from SQLite directly for an embedded ``sqlite:///``
    MLflow (no ``import mlflow``), else (or when that read finds nothing) from the backend."""
    version = None
    if isinstance(backend, EmbeddedBackend):
        version = read_alias(tracking_uri, name, alias)
    if version is None:
        version = backend.get_alias(name, alias)
    if version is None:
        raise NotFoundError(f"model {name!r} has no alias {alias!r}")
    return version


def resolve_model_version(registry: Registry, text: str) -> tuple[str, str]:
    """(name, version) of ``models:/NAME/V`` or ``models:/NAME@ALIAS`` (alias read from MLflow)."""
    ref = parse_model_ref(text)
    if ref.version:
        return ref.name, ref.version
    return ref.name, _alias_version(
        registry.settings.tracking_uri, registry.backend, ref.name, ref.alias or ""
    )


def _verify_artifact(
    reads: _Reads,
    kind: str,
    name: str,
    version: str,
    *,
    local_path: Path | None = None,
    progress: ProgressCallback | None = None,
    check_bytes: bool = True,
) -> VerifyReport:
    """The bundle and binding of ``kind:name/version`` checked against its files (``local_path``
    or the artifact store); ``check_bytes=False``: the signatures, key trust and signing time
    only, no file read."""
    signed = reads.signed_artifact(kind, name, version)
    subject, bundle, binding = signed.subject, signed.bundle, signed.binding
    if bundle is None or signed.uri is None:
        return VerifyReport(subject=subject, ok=False, problems=["assay holds no signature for it"])

    def check(path: Path) -> VerifyReport:
        report = verify_bundle_text(
            reads.trust,
            reads.settings,
            path,
            bundle,
            subject=subject,
            ignore_paths=tuple(MLFLOW_ADDED_FILES),
            progress=progress,
            check_bytes=check_bytes,
        )
        public = reads.trust.public_key(signed.binding_key) if signed.binding_key else None
        if binding is None or public is None:
            report.problems.append("no registration binding recorded")
        else:
            # The binding must cover the root of the bundle actually checked (not only the
            # store's column), or a bundle replayed from another version would pass.
            signed_root = parse_bundle(bundle).root_digest
            report.problems.extend(
                check_binding(binding, public, subject=subject, manifest_root=signed_root)
            )
            if signed_root != signed.manifest_root:
                report.problems.append(
                    "the signature bundle covers other bytes than the store recorded for it"
                )
        report.ok = report.ok and not report.problems
        return report

    if local_path is not None or not check_bytes:
        return check(local_path or Path(signed.uri))
    uri = signed.uri
    served = _served_uri(reads, name, version) if kind == "model" else None
    if served and served != uri:
        uri = served  # verify what a load would get, not only what assay recorded
    with artifact_files(reads.backend, uri, subject) as path:
        report = check(path)
    if uri != signed.uri and not report.ok:
        report.problems.append(
            f"MLflow now serves it from {uri}, not from {signed.uri} where assay registered it"
        )
    return report


def _served_uri(reads: _Reads, name: str, version: str) -> str | None:
    """Where MLflow hands out ``name``/``version`` now (its record can be edited apart from
    assay's): read from SQLite directly for an embedded ``sqlite:///`` MLflow, else from the
    backend; None when MLflow does not know the version."""
    from assay.registry.fast_read import read_download_uri

    backend = reads.backend
    if isinstance(backend, EmbeddedBackend):
        found = read_download_uri(reads.settings.tracking_uri, name, version)
        if found is not None:
            return found
    try:
        return backend.version_download_uri(name, version)
    except NotFoundError:
        return None


def verify_version(
    registry: Registry, name: str, version: str, *, progress: ProgressCallback | None = None
) -> VerifyReport:
    """Re-read a model version's bytes from the artifact store and verify them."""
    return _verify_artifact(RegistryReads(registry), "model", name, str(version), progress=progress)


def verify_local_copy(registry: Registry, name: str, version: str, path: Path) -> VerifyReport:
    """Verify files already downloaded for a model version (verify-before-load)."""
    return _verify_artifact(RegistryReads(registry), "model", name, str(version), local_path=path)


def verify_dataset(
    registry: Registry, name: str, version: str | None, *, progress: ProgressCallback | None = None
) -> VerifyReport:
    return _verify_artifact(RegistryReads(registry), "dataset", name, version, progress=progress)


def verify_local_dataset(registry: Registry, name: str, version: str, path: Path) -> VerifyReport:
    """Verify files already downloaded for a dataset version (verify-before-read)."""
    return _verify_artifact(RegistryReads(registry), "dataset", name, str(version), local_path=path)


def decided_report(
    reads: _Reads,
    name: str,
    version: str,
    *,
    alias: str | None = None,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """The enforcement decision for a model version as a ``VerifyReport`` (``ok`` only when
    the version may load; a refusal's reason is its problem)."""
    from assay.registry.enforcement import decide_with

    decision = decide_with(reads, name, version, alias=alias, progress=progress)
    if decision.report is None and decision.code == "tampered":
        raise IntegrityError(decision.reason)  # the bytes could not even be read back
    report = decision.report or VerifyReport(subject=decision.subject, ok=decision.allowed)
    if not decision.allowed:
        report.ok = False
        if decision.reason not in report.summary():
            report.problems.append(decision.reason)
    return report


def verify_uri(
    registry: Registry, target: str, *, progress: ProgressCallback | None = None
) -> VerifyReport:
    """Verify ``dataset:...`` (bytes), or decide on ``models:/...`` (bytes, trust, state, policy)."""
    if is_dataset_uri(target):
        ref = parse_dataset_ref(target)
        return verify_dataset(registry, ref.name, ref.version, progress=progress)
    ref_m = parse_model_ref(target)
    name, version = resolve_model_version(registry, target)
    return decided_report(
        RegistryReads(registry), name, version, alias=ref_m.alias, progress=progress
    )


def verify_target(
    settings: Settings, target: str, *, progress: ProgressCallback | None = None
) -> VerifyReport:
    """:func:`verify_uri` for ``settings``, through the ``sqlite3`` view when the store is the
    default SQLite file (no SQLAlchemy; no mlflow for an embedded SQLite MLflow and local
    artifacts), through the ``Registry`` otherwise."""
    view = open_store_view(settings)
    if view is None:
        from assay.registry.facade import Registry

        return verify_uri(Registry.open(settings), target, progress=progress)
    try:
        reads = _SqliteReads(settings, view)
        if is_dataset_uri(target):
            ref = parse_dataset_ref(target)
            return _verify_artifact(reads, "dataset", ref.name, ref.version, progress=progress)
        ref_m = parse_model_ref(target)
        version = ref_m.version or _alias_version(
            settings.tracking_uri, reads.backend, ref_m.name, ref_m.alias or ""
        )
        return decided_report(reads, ref_m.name, version, alias=ref_m.alias, progress=progress)
    finally:
        view.close()


def verify_target_or_path(
    settings: Settings,
    target: str,
    *,
    signature: Path | None = None,
    trust_cache: bool = False,
    ignore_paths: tuple[str, ...] = (),
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Verify ``target``: a registered model or dataset version (``models:/NAME/V``,
    ``models:/NAME@ALIAS``, ``dataset:NAME@V``), its bytes re-read from the artifact store
    (:func:`verify_target`; ``signature``, ``trust_cache`` and
    ``ignore_paths`` do not apply), else a local file or folder against its bundle
    (:func:`assay.trust.verification.verify_path`)."""
    from assay.core.refs import is_dataset_uri, is_model_uri

    if is_model_uri(target) or is_dataset_uri(target):
        return verify_target(settings, target, progress=progress)
    from assay.registry.trust_view import open_trust_view
    from assay.trust.verification import verify_path

    return verify_path(
        open_trust_view(settings),
        settings,
        Path(target),
        signature=signature,
        trust_cache=trust_cache,
        ignore_paths=ignore_paths,
        progress=progress,
    )

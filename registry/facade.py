"""The ``Registry`` facade: one object that the CLI and ``assay.rollback`` call.

It owns the settings, the store, the audit log and the key service, and exposes each job as one
method. Every state change appends an audit event in the same transaction as the change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.settings import Settings
from assay.registry.audit import AuditLog, AuditReport, CheckpointFile
from assay.registry.key_service import KeyService
from assay.registry.store import Store
from assay.registry.trust import KeyRecord

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.registry.hashing import ProgressCallback
    from assay.registry.mlflow_backend import MlflowBackend
    from assay.registry.signing import SignResult
    from assay.registry.verification import VerifyReport


@dataclass
class InitResult:
    """What ``assay init`` found or created."""

    home: str
    db_url: str
    tracking_uri: str | None
    created_key: KeyRecord | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "db_url": self.db_url,
            "tracking_uri": self.tracking_uri,
            "created_key": self.created_key.to_dict() if self.created_key else None,
        }


class Registry:
    """assay's library API over one ``Settings``."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.audit = AuditLog(store)

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings | None = None) -> Registry:
        """The registry of ``settings`` (default: from the environment); needs `assay init`."""
        settings = settings or Settings.from_env()
        return cls(settings, Store.open(settings))

    @classmethod
    def initialise(
        cls, settings: Settings | None = None, *, key_type: str = "ecdsa-p256"
    ) -> InitResult:
        """Create ASSAY_HOME, the store (schema at head) and a first key; safe to re-run."""
        settings = settings or Settings.from_env()
        settings.home.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.home, 0o700)
        registry = cls(settings, Store.open(settings, create=True))
        created = None
        with registry.store.session() as session:
            first_time = registry.audit._head_size(session) == 0
            if first_time:
                registry.record(
                    session,
                    "assay.init",
                    f"home:{settings.home}",
                    {"db": _safe_url(settings.db_url)},
                )
        if not settings.key and registry.keys.keyring.default_key() is None:
            created = registry.keys.generate(
                name="default", key_type=key_type, passphrase=settings.key_passphrase
            )
        tracking = registry._initialise_mlflow()
        return InitResult(str(settings.home), _safe_url(settings.db_url), tracking, created)

    def _initialise_mlflow(self) -> str | None:
        """Create MLflow's schema once (its first-time creation races); None when not installed."""
        try:
            self.backend.initialise()
        except ImportError:
            return None
        return _safe_url(self.settings.tracking_uri)

    # -- shared helpers --------------------------------------------------------------------

    def record(
        self, session: Session, action: str, subject: str, payload: dict[str, Any] | None = None
    ) -> None:
        """Append an audit event inside ``session``'s transaction."""
        self.audit.append(
            session,
            actor=self.settings.actor,
            action=action,
            subject=subject,
            payload=payload or {},
        )

    @cached_property
    def keys(self) -> KeyService:
        return KeyService(self)

    @cached_property
    def backend(self) -> MlflowBackend:
        """MLflow: REST for an http(s) tracking URI (no mlflow import), embedded otherwise."""
        from assay.registry.mlflow_backend import open_backend

        return open_backend(self.settings)

    # -- signing ---------------------------------------------------------------------------

    def sign_path(
        self,
        path: Path,
        *,
        key: str | None = None,
        signature: Path | None = None,
        reuse_digests: bool = False,
        ignore_paths: tuple[str, ...] = (),
        progress: ProgressCallback | None = None,
    ) -> SignResult:
        """Sign a local file or folder (see ``assay.registry.signing.sign_path``)."""
        from assay.registry.signing import sign_path

        return sign_path(
            self,
            path,
            key=key,
            signature=signature,
            reuse_digests=reuse_digests,
            ignore_paths=ignore_paths,
            progress=progress,
        )

    def verify_path(
        self,
        path: Path,
        *,
        signature: Path | None = None,
        trust_cache: bool = False,
        ignore_paths: tuple[str, ...] = (),
        progress: ProgressCallback | None = None,
    ) -> VerifyReport:
        """Verify a local file or folder against its bundle and the keys trusted here."""
        from assay.registry.verification import verify_path

        return verify_path(
            self.keys,
            self.settings,
            path,
            signature=signature,
            trust_cache=trust_cache,
            ignore_paths=ignore_paths,
            progress=progress,
        )

    # -- audit -----------------------------------------------------------------------------

    def audit_events(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit events as dicts, the newest ``limit`` (all when None), oldest first."""
        size = self.audit.tree_size()
        start = max(0, size - limit) if limit else 0
        return [
            {
                "seq": e.seq,
                "ts": e.ts.isoformat(timespec="seconds"),
                "actor": e.actor,
                "action": e.action,
                "subject": e.subject,
                "payload": e.payload_dict,
                "leaf_hash": e.leaf_hash,
            }
            for e in self.audit.events(start)
        ]

    def audit_checkpoint(self, key: str | None = None) -> dict[str, Any]:
        """Sign the log's (size, root) into a new file under ``$ASSAY_HOME/checkpoints``."""
        signing_key, _ = self.keys.signing_key(key)
        checkpoint = self.audit.checkpoint(signing_key, self.settings.checkpoints_dir)
        return {
            "tree_size": checkpoint.tree_size,
            "root_hash": checkpoint.root_hash.hex(),
            "key_id": checkpoint.key_id,
            "path": str(checkpoint.path),
        }

    def audit_verify(self, checkpoints: list[Path] | None = None) -> AuditReport:
        """Verify every event and consistency with the given (default: all) checkpoint files."""
        if checkpoints is None:
            folder = self.settings.checkpoints_dir
            checkpoints = sorted(folder.glob("checkpoint-*.json")) if folder.is_dir() else []

        def verifier(key_id: str, signature: bytes, data: bytes) -> bool:
            public = self.keys.public_key(key_id)
            return public is not None and public.verify(signature, data)

        return self.audit.verify(checkpoints, verifier)

    def latest_checkpoint(self) -> CheckpointFile | None:
        recorded = self.audit.recorded_checkpoints()
        return recorded[-1] if recorded else None


def _safe_url(url: str) -> str:
    """A database URL with any password masked."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url

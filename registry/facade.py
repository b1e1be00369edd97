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
from assay.store.audit import AuditLog, AuditReport, CheckpointFile
from assay.store.store import Store
from assay.trust.key_records import KeyRecord
from assay.trust.key_service import KeyService

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.integrity.hashing import ProgressCallback
    from assay.mlflow_access.base import MlflowBackend
    from assay.trust.policy import Policy
    from assay.trust.signing import SignResult
    from assay.trust.verification import VerifyReport


@dataclass
class InitResult:
    """What ``assay init`` found or created."""

    home: str
    db_url: str
    tracking_uri: str | None
    created_key: KeyRecord | None
    trust_root: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "db_url": self.db_url,
            "tracking_uri": self.tracking_uri,
            "created_key": self.created_key.to_dict() if self.created_key else None,
            "trust_root": self.trust_root,
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
        cls,
        settings: Settings | None = None,
        *,
        key_type: str = "ecdsa-p256",
        trust_root: str | None = None,
    ) -> InitResult:
        """Create ASSAY_HOME and the store (schema at head); safe to re-run.

        On a store that trusts nobody yet, this creates the **admin key** (the keyring's
        default key; ``ASSAY_KEY`` is refused here), makes it the trust root and pins it in
        ``$ASSAY_HOME/trust-root``. Joining a store that already has a trust root adds no key
        and needs the root's key id (``trust_root`` or ``ASSAY_TRUST_ROOT``), checked against
        the store's signed trust list: nobody's key is trusted on first use.
        """
        from assay.core.errors import ConfigError, IntegrityError
        from assay.integrity.keyring import resolve_signing_key
        from assay.trust.trust_list import pin_trust_root, pinned_trust_root

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
        wanted = (trust_root or "").strip().lower() or None
        pinned = pinned_trust_root(settings)
        if wanted and pinned and wanted != pinned:
            raise ConfigError(
                f"this home already pins trust root {pinned[:16]}, not {wanted[:16]}: "
                "use a fresh ASSAY_HOME for another store"
            )
        from assay.trust.key_service import trust_envelopes
        from assay.trust.trust_list import evaluate_trust_list

        with registry.store.session(readonly=True) as session:
            envelopes = trust_envelopes(session)
        if envelopes:
            root = pinned or wanted
            if root is None:
                raise ConfigError(
                    "this store already has an admin key (trust root): run `assay init "
                    "--trust-root ID` (or set ASSAY_TRUST_ROOT) with the key id your admin "
                    "gives you; assay never trusts a store's keys on first use"
                )
            trust = evaluate_trust_list(envelopes, root)  # IntegrityError if it is not ours
            if pinned is None:
                pin_trust_root(settings, root)
            root_id = trust.root
        else:
            if wanted:
                raise IntegrityError(
                    f"this store has no trust root yet, so it cannot be {wanted[:16]}: "
                    "wrong ASSAY_DB_URL?"
                )
            if settings.key:
                raise ConfigError(
                    "this store has no admin key yet: run the first `assay init` without "
                    "ASSAY_KEY (it creates the admin key in this home's keyring), then trust "
                    "CI keys with `assay key trust`"
                )
            generated = registry.keys.keyring.default_key() is None
            if generated:
                registry.keys.keyring.generate("default", key_type, settings.key_passphrase)
            admin = resolve_signing_key(settings)
            record = registry.keys.bootstrap(admin, "default")
            created = record if generated else None
            root_id = admin.key_id
        tracking = registry._initialise_mlflow()
        return InitResult(
            str(settings.home), _safe_url(settings.db_url), tracking, created, root_id
        )

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
        """Append an audit event inside ``session``'s transaction.

        A state change (see ``assay.trust.signed_changes.policy_action``) is also signed by
        the acting key, which must hold the role the policy names for it (``RefusedError``
        otherwise, and nothing commits); the actor recorded is that key's id.
        """
        from assay.trust.signed_changes import actor_label, policy_action

        payload = payload or {}
        if policy_action(action, payload) is None:
            actor = actor_label(self._acting_key_id(), self.settings.actor)
        else:
            policy = self.policy(session)
            action_name = policy_action(action, payload, policy) or "promote"
            key, _ = self.keys.signing_key(role=policy.role_for(action_name))
            actor = actor_label(key.key_id, self.settings.actor)
            event = self.audit.append(
                session, actor=actor, action=action, subject=subject, payload=payload
            )
            # The statement names its audit event, so deleting a newer statement (or adding an
            # event) shows as a disagreement at load (signed_changes.audit_disagreement).
            self._sign_change(session, key, action, subject, payload, seq=event.seq)
            return
        self.audit.append(session, actor=actor, action=action, subject=subject, payload=payload)

    def _acting_key_id(self) -> str | None:
        """The id of the key this process acts with, if one can be loaded (else None)."""
        from assay.trust.signer_check import acting_key_id

        return acting_key_id(self.settings)

    def _sign_change(
        self,
        session: Session,
        key: Any,
        action: str,
        subject: str,
        payload: dict[str, Any],
        *,
        seq: int,
    ) -> None:
        from assay.registry.versions import subject_artifact
        from assay.store.models import Signature, utcnow
        from assay.trust.signed_changes import CHANGE_PREFIX, sign_change

        artifact = subject_artifact(session, subject)
        now = utcnow()
        envelope, digest = sign_change(
            key,
            action=action,
            subject=subject,
            payload=payload,
            digest=artifact.manifest_root if artifact is not None else None,
            display_name=self.settings.actor,
            at=now,
            seq=seq,
        )
        session.add(
            Signature(
                artifact_id=artifact.id if artifact is not None else None,
                subject=CHANGE_PREFIX + subject,
                manifest_root=digest,
                key_id=key.key_id,
                bundle=envelope,
                recorded_at=now,
            )
        )

    def policy(self, session: Session | None = None) -> Policy:
        """The policy in force (signed by an admin; the built-in default when none is set)."""
        from sqlalchemy import select

        from assay.store.models import Signature
        from assay.trust.policy import POLICY_SUBJECT, evaluate_policy

        def read(s: Session) -> Policy:
            envelopes = s.scalars(
                select(Signature.bundle).where(Signature.subject == POLICY_SUBJECT)
            )
            return evaluate_policy(list(envelopes), self.keys.trust_list(s))

        if session is not None:
            return read(session)
        with self.store.session(readonly=True) as own:
            return read(own)

    @cached_property
    def keys(self) -> KeyService:
        return KeyService(self)

    @cached_property
    def backend(self) -> MlflowBackend:
        """MLflow: REST for an http(s) tracking URI (no mlflow import), embedded otherwise."""
        from assay.mlflow_access.base import open_backend

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
        **mode: Any,
    ) -> SignResult:
        """Sign a local file or folder (see ``assay.trust.signing.sign_path``; ``mode``:
        ``hash_type``, ``shard_size``, ``prehash``)."""
        from assay.trust.signing import sign_path

        return sign_path(
            self,
            path,
            key=key,
            signature=signature,
            reuse_digests=reuse_digests,
            ignore_paths=ignore_paths,
            progress=progress,
            **mode,
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
        from assay.trust.verification import verify_path

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

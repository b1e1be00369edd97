"""Keys assay trusts: the keyring's private keys joined with the store's trust records.

The keyring (files under ``$ASSAY_HOME/keys``) holds private keys; the store decides trust.
Every change (generate, trust, revoke) is an audit event in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from assay.core.errors import NotFoundError, RefusedError
from assay.registry.keyring import Keyring, resolve_signing_key
from assay.registry.keys import PublicKey, SigningKey
from assay.registry.models import Key, utcnow
from assay.registry.trust import KeyRecord

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.registry.facade import Registry


class KeyService:
    """Generate, list, export, trust and revoke keys; every change is an audit event."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self.keyring = Keyring(registry.settings.keys_dir)

    # -- lookups ----------------------------------------------------------------------------

    def _rows(self, session: Session) -> list[Key]:
        return list(session.scalars(select(Key).order_by(Key.created_at)))

    def _find_row(self, session: Session, ref: str) -> Key:
        ref_l = ref.strip().lower()
        rows = self._rows(session)
        exact = [r for r in rows if r.key_id == ref_l]
        if exact:
            return exact[0]
        named = [r for r in rows if r.name == ref.strip()]
        if len(named) == 1:
            return named[0]
        if len(ref_l) >= 8 and all(c in "0123456789abcdef" for c in ref_l):
            prefixed = [r for r in rows if r.key_id.startswith(ref_l)]
            if len(prefixed) == 1:
                return prefixed[0]
            if len(prefixed) > 1:
                raise NotFoundError(f"key prefix {ref!r} is ambiguous: use more characters")
        if len(named) > 1:
            raise NotFoundError(f"several keys are named {ref!r}: use the key id")
        raise NotFoundError(f"unknown key {ref!r}: see `assay key list`")

    def get(self, ref: str) -> KeyRecord:
        with self._registry.store.session(readonly=True) as session:
            row = self._find_row(session, ref)
            return KeyRecord.from_row(row, self._has_private(row.key_id))

    def _has_private(self, key_id: str) -> bool:
        return any(i.key_id == key_id and i.has_private for i in self.keyring.list())

    def for_hint(
        self, hint: str | None, embedded_pem: str | None = None
    ) -> tuple[KeyRecord, PublicKey] | None:
        """The trusted key an OMS bundle names (by hint or embedded PEM), or None."""
        wanted: str | None = None
        if embedded_pem:
            wanted = PublicKey.from_pem(embedded_pem).key_id
        with self._registry.store.session(readonly=True) as session:
            for row in self._rows(session):
                public = PublicKey.from_pem(row.public_pem)
                if public.key_id == wanted or (hint and hint in (public.oms_hint, public.key_id)):
                    return KeyRecord.from_row(row), public
        return None

    def recorded_at(self, bundle_text: str, root_digest: str, key_id: str) -> datetime | None:
        """When assay first recorded exactly this bundle, or None if it never did."""
        from assay.registry.models import Signature

        with self._registry.store.session(readonly=True) as session:
            rows = session.scalars(
                select(Signature)
                .where(Signature.manifest_root == root_digest, Signature.key_id == key_id)
                .order_by(Signature.recorded_at)
            )
            for row in rows:
                if row.bundle.strip() == bundle_text.strip():
                    return row.recorded_at
        return None

    def public_key(self, key_id: str) -> PublicKey | None:
        with self._registry.store.session(readonly=True) as session:
            row = session.get(Key, key_id)
            return PublicKey.from_pem(row.public_pem) if row else None

    # -- changes ----------------------------------------------------------------------------

    def list(self) -> list[KeyRecord]:
        private = {i.key_id for i in self.keyring.list() if i.has_private}
        with self._registry.store.session(readonly=True) as session:
            return [KeyRecord.from_row(r, r.key_id in private) for r in self._rows(session)]

    def generate(
        self, name: str | None = None, key_type: str = "ecdsa-p256", passphrase: str | None = None
    ) -> KeyRecord:
        """Create a key pair in the keyring and trust its public half."""
        name = name or f"key-{utcnow():%Y%m%d%H%M%S}"
        info = self.keyring.generate(name, key_type, passphrase)
        try:
            public = self.keyring.public_key(info.key_id)
            with self._registry.store.session() as session:
                row = self._insert(session, public, name, has_private=True, source="keyring")
                self._registry.record(
                    session,
                    "key.generate",
                    f"key:{info.key_id}",
                    {"name": name, "key_type": key_type},
                )
                return KeyRecord.from_row(row, True)
        except BaseException:
            self.keyring.remove(info.key_id)
            raise

    def trust(self, pem_text: str, name: str, *, source: str = "imported") -> KeyRecord:
        """Trust a public key (idempotent); a revoked key is never trusted again."""
        public = PublicKey.from_pem(pem_text)
        with self._registry.store.session() as session:
            row = session.get(Key, public.key_id)
            if row is not None:
                if row.revoked_at is not None:
                    raise RefusedError(
                        f"key {public.key_id[:16]} was revoked at {row.revoked_at.isoformat()}; "
                        "a revoked key cannot be trusted again"
                    )
                return KeyRecord.from_row(row, self._has_private(row.key_id))
            row = self._insert(session, public, name, has_private=False, source=source)
            self._registry.record(
                session, "key.trust", f"key:{public.key_id}", {"name": name, "source": source}
            )
            return KeyRecord.from_row(row, self._has_private(row.key_id))

    def revoke(
        self, ref: str, *, reason: str, compromised_since: datetime | None = None
    ) -> KeyRecord:
        """Revoke a key now; an earlier compromise time also fails signatures since then.

        Re-running is safe: the earliest compromise time given wins, the revocation time stays.
        """
        with self._registry.store.session() as session:
            row = self._find_row(session, ref)
            now = utcnow()
            if compromised_since is not None and compromised_since > now:
                raise RefusedError("--compromised-since is in the future")
            changed = False
            if row.revoked_at is None:
                row.revoked_at, row.revoke_reason, changed = now, reason, True
            if compromised_since is not None and (
                row.compromised_since is None or compromised_since < row.compromised_since
            ):
                row.compromised_since, changed = compromised_since, True
            if changed:
                self._registry.record(
                    session,
                    "key.revoke",
                    f"key:{row.key_id}",
                    {
                        "reason": reason,
                        "compromised_since": compromised_since.isoformat()
                        if compromised_since
                        else None,
                    },
                )
            return KeyRecord.from_row(row, self._has_private(row.key_id))

    def export(self, ref: str) -> str:
        with self._registry.store.session(readonly=True) as session:
            return self._find_row(session, ref).public_pem

    # -- signing ----------------------------------------------------------------------------

    def signing_key(self, ref: str | None = None) -> tuple[SigningKey, KeyRecord]:
        """The private key to sign with, refusing revoked keys.

        A key given through ``ASSAY_KEY`` or a PEM path that the store does not know yet is
        recorded as trusted (source ``env``/``file``), with an audit event.
        """
        key = resolve_signing_key(self._registry.settings, ref)
        with self._registry.store.session() as session:
            row = session.get(Key, key.key_id)
            if row is None:
                source = "env" if ref is None else "file"
                row = self._insert(
                    session, key.public_key, f"{source}-{key.key_id[:8]}", False, source
                )
                self._registry.record(
                    session, "key.trust", f"key:{key.key_id}", {"name": row.name, "source": source}
                )
            record = KeyRecord.from_row(row)
        if record.cutoff is not None:
            raise RefusedError(
                f"key {key.key_id[:16]} ({record.name}) is {record.status}: refusing to sign with it"
            )
        return key, record

    @staticmethod
    def _insert(
        session: Session, public: PublicKey, name: str, has_private: bool, source: str
    ) -> Key:
        row = Key(
            key_id=public.key_id,
            name=name,
            key_type=public.key_type,
            public_pem=public.pem,
            has_private=has_private,
            source=source,
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        return row

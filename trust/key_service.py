"""Keys assay trusts: the keyring's private keys joined with the store's trust records.

The keyring (files under ``$ASSAY_HOME/keys``) holds private keys; the store decides trust.
Every change (generate, trust, revoke) is an audit event in the same transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from assay.core.errors import ConfigError, NotFoundError, RefusedError
from assay.integrity.keyring import Keyring, resolve_signing_key
from assay.integrity.keys import PublicKey, SigningKey
from assay.store.models import Key, Signature, utcnow
from assay.trust.key_records import KeyRecord
from assay.trust.signer_check import check_signer, untrusted_key
from assay.trust.trust_list import (
    TRUST_SUBJECT,
    TrustEntry,
    TrustList,
    evaluate_trust_list,
    pin_trust_root,
    pinned_trust_root,
    revoked,
    validate_roles,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.registry.facade import Registry

DEFAULT_ROLES = ("signer",)


def store_document(
    session: Session, subject: str, key_id: str, envelope: str, recorded_at: datetime
) -> None:
    """Record a signed store-wide document (trust list, policy) under ``subject``."""
    session.add(
        Signature(
            artifact_id=None,
            subject=subject,
            manifest_root=hashlib.sha256(envelope.encode("utf-8")).hexdigest(),
            key_id=key_id,
            bundle=envelope,
            recorded_at=recorded_at,
        )
    )
    session.flush()


def trust_envelopes(session: Session) -> list[str]:
    """Every trust-list envelope the store holds."""
    return list(session.scalars(select(Signature.bundle).where(Signature.subject == TRUST_SUBJECT)))


class KeyService:
    """Generate, list, export, trust, grant and revoke keys; every change is an audit event.

    Trust comes from the signed trust list (``assay.trust.trust_list``), never from the
    ``keys`` table alone, which only indexes the keys assay has seen.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self.keyring = Keyring(registry.settings.keys_dir)
        self._cache: tuple[tuple, TrustList] | None = None

    # -- the trust list --------------------------------------------------------------------

    def trust_list(self, session: Session | None = None) -> TrustList:
        """The trust list in force (``IntegrityError`` if the stored chain is broken).

        Evaluated again only when the stored trust-list rows change (count and newest id).
        """
        if session is not None:
            return self._evaluate(session)
        with self._registry.store.session(readonly=True) as own:
            return self._evaluate(own)

    def _evaluate(self, session: Session) -> TrustList:
        from sqlalchemy import func

        root = pinned_trust_root(self._registry.settings)
        marker = tuple(
            session.execute(
                select(func.count(Signature.id), func.max(Signature.id)).where(
                    Signature.subject == TRUST_SUBJECT
                )
            ).one()
        )
        cached = self._cache
        if cached is not None and cached[0] == (marker, root):
            return cached[1]
        trust = evaluate_trust_list(trust_envelopes(session), root)
        self._cache = ((marker, root), trust)
        return trust

    def _publish(self, session: Session, current: TrustList, new: TrustList) -> TrustList:
        """Sign ``new`` with the acting admin key of ``current`` and store it."""
        self._store_list(session, self.admin_key(current), new)
        return new

    @staticmethod
    def _store_list(session: Session, key: SigningKey, trust: TrustList) -> None:
        now = utcnow()
        store_document(session, TRUST_SUBJECT, key.key_id, trust.sign(key, now), now)

    def admin_key(self, current: TrustList) -> SigningKey:
        """The acting key (``ASSAY_KEY`` or the keyring default) if ``current`` grants it the admin
        role; RefusedError otherwise. Changing trust or policy signs with it."""
        try:
            key = resolve_signing_key(self._registry.settings)
        except (ConfigError, NotFoundError) as exc:
            raise RefusedError(
                f"changing trust needs the admin key: {exc} (set ASSAY_KEY to an admin key)"
            ) from exc
        entry = current.active(key.key_id)
        if entry is None or not entry.has_role("admin"):
            raise RefusedError(
                f"key {key.key_id[:16]} does not hold the admin role: only an admin key "
                "(ASSAY_KEY or the keyring default) can change trust or policy"
            )
        return key

    def _revoking_key(self, current: TrustList, target: str) -> SigningKey:
        """An admin key, or the key being revoked itself (a key may always revoke itself)."""
        try:
            key = resolve_signing_key(self._registry.settings)
        except (ConfigError, NotFoundError):
            key = None
        if key is not None and key.key_id == target:
            return key
        return self.admin_key(current)

    def bootstrap(self, key: SigningKey, name: str) -> KeyRecord:
        """Make ``key`` this store's trust root (first ``assay init``): trust list 1, pinned."""
        settings = self._registry.settings
        with self._registry.store.session() as session:
            self._lock(session)
            if trust_envelopes(session):
                raise RefusedError("this store already has a trust root")
            row = session.get(Key, key.key_id) or self._insert(
                session, key.public_key, name, has_private=True, source="keyring"
            )
            entry = self._entry(key.public_key, row.name, ("admin",))
            self._store_list(session, key, TrustList(1, {key.key_id: entry}, key.key_id))
            self._registry.record(
                session, "trust.root", f"key:{key.key_id}", {"name": row.name, "serial": 1}
            )
            pin_trust_root(settings, key.key_id)
            return entry.record(has_private=self._has_private(key.key_id))

    @staticmethod
    def _lock(session: Session) -> None:
        from assay.store.store import lock_store

        lock_store(session)

    @staticmethod
    def _entry(public: PublicKey, name: str, roles: Iterable[str]) -> TrustEntry:
        return TrustEntry(
            key_id=public.key_id,
            name=name,
            key_type=public.key_type,
            public_pem=public.pem,
            roles=validate_roles(roles),
            added_at=utcnow(),
        )

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

    def _record(self, row: Key, trust: TrustList, has_private: bool) -> KeyRecord:
        return trust.key_record(row, has_private=has_private)

    def get(self, ref: str) -> KeyRecord:
        with self._registry.store.session(readonly=True) as session:
            row = self._find_row(session, ref)
            return self._record(row, self.trust_list(session), self._has_private(row.key_id))

    def _has_private(self, key_id: str) -> bool:
        return any(i.key_id == key_id and i.has_private for i in self.keyring.list())

    def for_hint(
        self, hint: str | None, embedded_pem: str | None = None
    ) -> tuple[KeyRecord, PublicKey] | None:
        """The trusted key an OMS bundle names (by hint or embedded PEM), or None."""
        entry = self.trust_list().for_hint(hint, embedded_pem)
        return (entry.record(), entry.public_key) if entry else None

    def recorded_at(self, bundle_text: str, root_digest: str, key_id: str) -> datetime | None:
        """When assay first recorded exactly this bundle, or None if it never did."""
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
        """The public key of a *trusted* key (revoked ones included), else None."""
        entry = self.trust_list().get(key_id)
        return entry.public_key if entry else None

    def record_of(self, key_id: str) -> KeyRecord | None:
        """The trust record of ``key_id`` (roles, revocation), or None when it is not trusted."""
        entry = self.trust_list().get(key_id)
        return entry.record() if entry else None

    # -- changes ----------------------------------------------------------------------------

    def list(self) -> list[KeyRecord]:
        private = {i.key_id for i in self.keyring.list() if i.has_private}
        with self._registry.store.session(readonly=True) as session:
            trust = self.trust_list(session)
            return [self._record(r, trust, r.key_id in private) for r in self._rows(session)]

    def generate(
        self,
        name: str | None = None,
        key_type: str = "ecdsa-p256",
        passphrase: str | None = None,
        *,
        roles: Iterable[str] | None = None,
    ) -> KeyRecord:
        """Create a key pair in the keyring; an admin acting here also trusts it with ``roles``."""
        name = name or f"key-{utcnow():%Y%m%d%H%M%S}"
        wanted = validate_roles(DEFAULT_ROLES if roles is None else roles)
        info = self.keyring.generate(name, key_type, passphrase)
        try:
            public = self.keyring.public_key(info.key_id)
            with self._registry.store.session() as session:
                self._lock(session)
                row = self._insert(session, public, name, has_private=True, source="keyring")
                self._registry.record(
                    session,
                    "key.generate",
                    f"key:{info.key_id}",
                    {"name": name, "key_type": key_type},
                )
                current = self.trust_list(session)
                if self._can_administer(current):
                    new = current.with_entry(self._entry(public, name, wanted))
                    self._publish(session, current, new)
                    self._registry.record(
                        session,
                        "key.trust",
                        f"key:{info.key_id}",
                        {"name": name, "source": "keyring", "roles": list(wanted)},
                    )
                    return new.entries[info.key_id].record(has_private=True)
                return KeyRecord.from_row(row, True)
        except BaseException:
            self.keyring.remove(info.key_id)
            raise

    def _can_administer(self, current: TrustList) -> bool:
        try:
            self.admin_key(current)
        except RefusedError:
            return False
        return True

    def trust(
        self,
        pem_text: str,
        name: str,
        *,
        source: str = "imported",
        roles: Iterable[str] | None = None,
    ) -> KeyRecord:
        """Trust a public key with ``roles`` (admin only; idempotent); revoked keys never again."""
        public = PublicKey.from_pem(pem_text)
        wanted = validate_roles(DEFAULT_ROLES if roles is None else roles)
        with self._registry.store.session() as session:
            self._lock(session)
            current = self.trust_list(session)
            entry = current.get(public.key_id)
            if entry is not None:
                if entry.revoked_at is not None:
                    raise RefusedError(
                        f"key {public.key_id[:16]} was revoked at "
                        f"{entry.revoked_at.isoformat()}; a revoked key cannot be trusted again"
                    )
                return entry.record(has_private=self._has_private(public.key_id))
            row = session.get(Key, public.key_id) or self._insert(
                session, public, name, has_private=False, source=source
            )
            new = current.with_entry(self._entry(public, row.name, wanted))
            self._publish(session, current, new)
            self._registry.record(
                session,
                "key.trust",
                f"key:{public.key_id}",
                {"name": row.name, "source": source, "roles": list(wanted)},
            )
            return new.entries[public.key_id].record(has_private=self._has_private(row.key_id))

    def grant(self, ref: str, roles: Iterable[str], *, remove: bool = False) -> KeyRecord:
        """Add (or with ``remove`` take away) roles of a trusted key (admin only)."""
        changed_roles = validate_roles(roles)
        with self._registry.store.session() as session:
            self._lock(session)
            row = self._find_row(session, ref)
            current = self.trust_list(session)
            entry = current.active(row.key_id)
            if entry is None:
                raise untrusted_key(row.key_id, " (or it was revoked)")
            have = set(entry.roles)
            have = have - set(changed_roles) if remove else have | set(changed_roles)
            if not remove and set(changed_roles) <= set(entry.roles):
                return entry.record(has_private=self._has_private(row.key_id))
            from dataclasses import replace

            new = current.with_entry(replace(entry, roles=validate_roles(have)))
            if not any(e.has_role("admin") for e in new.entries.values() if new.active(e.key_id)):
                raise RefusedError("refusing to remove the last admin role of this store")
            self._publish(session, current, new)
            self._registry.record(
                session,
                "key.roles",
                f"key:{row.key_id}",
                {"roles": list(new.entries[row.key_id].roles)},
            )
            return new.entries[row.key_id].record(has_private=self._has_private(row.key_id))

    def revoke(
        self, ref: str, *, reason: str, compromised_since: datetime | None = None
    ) -> KeyRecord:
        """Revoke a key now (an admin, or the key itself); an earlier compromise time also fails
        signatures recorded since then.

        Re-running is safe: the earliest compromise time given wins, the revocation time stays.
        """
        with self._registry.store.session() as session:
            self._lock(session)
            row = self._find_row(session, ref)
            now = utcnow()
            if compromised_since is not None and compromised_since > now:
                raise RefusedError("--compromised-since is in the future")
            current = self.trust_list(session)
            entry = current.get(row.key_id)
            if entry is None:
                raise RefusedError(f"key {row.key_id[:16]} is not trusted: nothing to revoke")
            updated = revoked(entry, at=now, reason=reason, since=compromised_since)
            if updated != entry:
                new = current.with_entry(updated)
                self._store_list(session, self._revoking_key(current, row.key_id), new)
                row.revoked_at, row.revoke_reason = updated.revoked_at, updated.revoke_reason
                row.compromised_since = updated.compromised_since
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
            return updated.record(has_private=self._has_private(row.key_id))

    def export(self, ref: str) -> str:
        with self._registry.store.session(readonly=True) as session:
            return self._find_row(session, ref).public_pem

    # -- signing ----------------------------------------------------------------------------

    def signing_key(
        self, ref: str | None = None, *, role: str | None = None
    ) -> tuple[SigningKey, KeyRecord]:
        """The private key to sign with: trusted by the store, not revoked, holding ``role``.

        A key the store does not trust (``ASSAY_KEY`` included) is refused with a line saying
        how to get it trusted: nobody's key is trusted on first use.
        """
        key = resolve_signing_key(self._registry.settings, ref)
        record = check_signer(key, self.trust_list(), role)
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

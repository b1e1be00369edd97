"""The trust list: which keys a store trusts and with which roles, as a chain of signed statements.

No row of the ``keys`` table grants trust by itself: trust comes from trust-list statements
(``urn:assay:trust-list:v1``) kept in the ``signatures`` table under :data:`TRUST_SUBJECT`.
Statement ``serial`` 1 is signed by the **trust root**, the admin key created by the first
``assay init`` on the store, whose id is pinned outside the database (``$ASSAY_HOME/trust-root``
or ``ASSAY_TRUST_ROOT``); statement ``n + 1`` must be signed by a key holding the ``admin`` role in
statement ``n``. The newest statement of an unbroken chain is the trust list in force; a gap, a
duplicate serial or a bad signature anywhere is tampering (``IntegrityError``): assay then trusts
nothing rather than guess.

Roles: ``admin`` (change trust and policy; holds every role), ``signer`` (register and sign),
``approver`` (mark known-good, promote, label), ``responder`` (mark compromised or quarantined,
freeze, roll back).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from assay.core.canonical import iso_utc, parse_iso_utc
from assay.core.errors import ConfigError, FormatError, IntegrityError, RefusedError
from assay.integrity.keys import PublicKey
from assay.trust.key_records import KeyRecord, KeyRow
from assay.trust.statements import (
    digest_of,
    open_statement,
    sign_statement,
    statement_signed_by,
)

if TYPE_CHECKING:
    from assay.core.settings import Settings
    from assay.integrity.keys import SigningKey
    from assay.store.models import Key

__all__ = [
    "PREDICATE_TYPE",
    "ROLES",
    "ROOT_ENV",
    "TRUST_SUBJECT",
    "TrustEntry",
    "TrustList",
    "evaluate_trust_list",
    "pin_trust_root",
    "pinned_trust_root",
    "validate_roles",
]

PREDICATE_TYPE = "urn:assay:trust-list:v1"
TRUST_SUBJECT = "urn:assay:trust-list"
ROOT_ENV = "ASSAY_TRUST_ROOT"
ROOT_FILE = "trust-root"
ROLES = ("admin", "signer", "approver", "responder")
_KEY_ID = re.compile(r"^[0-9a-f]{64}$")
_WHAT = "trust list"


def validate_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """The roles, de-duplicated in :data:`ROLES` order; ``RefusedError`` naming an unknown one."""
    wanted = {r.strip().lower() for r in roles if r.strip()}
    unknown = sorted(wanted - set(ROLES))
    if unknown:
        raise RefusedError(f"unknown role {unknown[0]!r}: use one of {', '.join(ROLES)}")
    return tuple(r for r in ROLES if r in wanted)


# -- the pinned root ---------------------------------------------------------------------------


def pinned_trust_root(settings: Settings) -> str | None:
    """The trust root's key id: ``ASSAY_TRUST_ROOT`` if set, else ``$ASSAY_HOME/trust-root``."""
    env = (os.environ.get(ROOT_ENV) or "").strip().lower()
    path = settings.home / ROOT_FILE
    pinned: str | None = None
    try:
        if path.is_file() and path.stat().st_size <= 4096:
            pinned = path.read_text(encoding="ascii").strip().lower() or None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the trust root pinned in {path}: {exc}") from exc
    if env:
        if not _KEY_ID.match(env):
            raise ConfigError(f"{ROOT_ENV} must be a 64-hex key id (see `assay key list`)")
        if pinned and pinned != env:
            raise ConfigError(
                f"{ROOT_ENV} names key {env[:16]} but {path} pins {pinned[:16]}: "
                "one of them is wrong; fix it before trusting anything"
            )
        return env
    if pinned is not None and not _KEY_ID.match(pinned):
        raise ConfigError(f"{path} does not hold a key id: re-run `assay init --trust-root ID`")
    return pinned


def pin_trust_root(settings: Settings, key_id: str) -> None:
    """Write ``$ASSAY_HOME/trust-root`` (0600, atomically)."""
    from assay.core.atomic import atomic_write

    atomic_write(settings.home / ROOT_FILE, (key_id + "\n").encode("ascii"), mode=0o600)


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustEntry:
    """One trusted key in a trust-list statement."""

    key_id: str
    name: str
    key_type: str
    public_pem: str
    roles: tuple[str, ...]
    added_at: datetime | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    compromised_since: datetime | None = None

    @property
    def public_key(self) -> PublicKey:
        return PublicKey.from_pem(self.public_pem)

    def has_role(self, role: str) -> bool:
        return role in self.roles or "admin" in self.roles

    def to_json(self) -> dict[str, Any]:
        def when(t: datetime | None) -> str | None:
            return iso_utc(t) if t else None

        return {
            "key_id": self.key_id,
            "name": self.name,
            "key_type": self.key_type,
            "public_pem": self.public_pem,
            "roles": list(self.roles),
            "added_at": when(self.added_at),
            "revoked_at": when(self.revoked_at),
            "revoke_reason": self.revoke_reason,
            "compromised_since": when(self.compromised_since),
        }

    @classmethod
    def from_json(cls, data: Any) -> TrustEntry:
        if not isinstance(data, dict):
            raise IntegrityError("corrupt trust list in the store: an entry is not an object")

        def when(name: str) -> datetime | None:
            value = data.get(name)
            return parse_iso_utc(value) if value else None

        try:
            entry = cls(
                key_id=str(data["key_id"]),
                name=str(data["name"]),
                key_type=str(data["key_type"]),
                public_pem=str(data["public_pem"]),
                roles=tuple(str(r) for r in data.get("roles") or ()),
                added_at=when("added_at"),
                revoked_at=when("revoked_at"),
                revoke_reason=data.get("revoke_reason"),
                compromised_since=when("compromised_since"),
            )
            public = PublicKey.from_pem(entry.public_pem)
        except (KeyError, TypeError, ValueError, FormatError) as exc:
            raise IntegrityError("corrupt trust list in the store: a malformed entry") from exc
        except Exception as exc:  # a key that does not parse
            raise IntegrityError("corrupt trust list in the store: an unreadable key") from exc
        if public.key_id != entry.key_id:
            raise IntegrityError(
                f"trust list entry {entry.key_id[:16]} holds another key's PEM: tampered"
            )
        return entry

    def record(self, *, has_private: bool = False, created_at: datetime | None = None) -> KeyRecord:
        return KeyRecord(
            key_id=self.key_id,
            name=self.name,
            key_type=self.key_type,
            created_at=created_at or self.added_at,
            has_private=has_private,
            trusted=True,
            revoked_at=self.revoked_at,
            revoke_reason=self.revoke_reason,
            compromised_since=self.compromised_since,
            roles=self.roles,
        )


@dataclass(frozen=True)
class TrustList:
    """The trust list in force: ``serial`` 0 means the store has none yet."""

    serial: int = 0
    entries: dict[str, TrustEntry] = field(default_factory=dict)
    root: str | None = None

    def get(self, key_id: str) -> TrustEntry | None:
        return self.entries.get(key_id)

    def key_record(self, row: Key | KeyRow, *, has_private: bool) -> KeyRecord:
        """The one mapping of a store's key row to a ``KeyRecord``: trust, roles and revocation
        from this signed list when it holds the key, else an untrusted record of the row."""
        entry = self.get(row.key_id)
        if entry is not None:
            return entry.record(has_private=has_private, created_at=row.created_at)
        return KeyRecord.from_row(row, has_private)

    def for_hint(self, hint: str | None, embedded_pem: str | None = None) -> TrustEntry | None:
        """The entry an OMS bundle names by its key hint or embedded PEM."""
        wanted = None
        if embedded_pem:
            try:
                wanted = PublicKey.from_pem(embedded_pem).key_id
            except Exception:  # noqa: BLE001 - an unparsable embedded key names no trusted key
                return None
        for entry in self.entries.values():
            if entry.key_id == wanted:
                return entry
            if hint and hint in (entry.key_id, entry.public_key.oms_hint):
                return entry
        return None

    def active(self, key_id: str) -> TrustEntry | None:
        """The entry of ``key_id`` if it is trusted and neither revoked nor compromised."""
        entry = self.entries.get(key_id)
        if entry is None or entry.revoked_at or entry.compromised_since:
            return None
        return entry

    def next(self, entries: Sequence[TrustEntry]) -> TrustList:
        return TrustList(self.serial + 1, {e.key_id: e for e in entries}, self.root)

    def with_entry(self, entry: TrustEntry) -> TrustList:
        entries = dict(self.entries)
        entries[entry.key_id] = entry
        return TrustList(self.serial + 1, entries, self.root)

    def predicate(self, issued_at: datetime) -> dict[str, Any]:
        keys = [self.entries[k].to_json() for k in sorted(self.entries)]
        return {"serial": self.serial, "issued_at": iso_utc(issued_at), "keys": keys}

    def sign(self, key: SigningKey, issued_at: datetime) -> str:
        """The envelope of this list signed by ``key`` (the caller checks ``key`` may sign it)."""
        predicate = self.predicate(issued_at)
        return sign_statement(
            key,
            predicate_type=PREDICATE_TYPE,
            subject=TRUST_SUBJECT,
            digest=digest_of(predicate),
            predicate=predicate,
        )


def evaluate_trust_list(envelopes: Iterable[str], root: str | None) -> TrustList:
    """The trust list in force from every stored trust-list envelope, checked against ``root``.

    ``root`` None with no envelope is a store that trusts nothing yet; envelopes without a pinned
    root, or any break in the chain, raise (``ConfigError`` / ``IntegrityError``).
    """
    statements = []
    for text in envelopes:
        statement = open_statement(text, PREDICATE_TYPE, what=_WHAT)
        serial = statement.predicate.get("serial")
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 1:
            raise IntegrityError("corrupt trust list in the store: bad serial")
        if statement.subject != TRUST_SUBJECT or statement.digest != digest_of(statement.predicate):
            raise IntegrityError("corrupt trust list in the store: its digest does not match")
        statements.append((serial, statement))
    if not statements:
        return TrustList(0, {}, root)
    if root is None:
        raise ConfigError(
            "this store has a trust list but this assay home pins no trust root: run "
            "`assay init --trust-root ID` with the admin key id your administrator gives you"
        )
    statements.sort(key=lambda s: s[0])
    serials = [s for s, _ in statements]
    if serials != list(range(1, len(serials) + 1)):
        raise IntegrityError(
            "the store's trust list has a gap or a duplicate serial: it was edited outside assay"
        )
    current = TrustList(0, {}, root)
    for serial, statement in statements:
        raw = statement.predicate.get("keys")
        if not isinstance(raw, list) or len(raw) > 10_000:
            raise IntegrityError("corrupt trust list in the store: no key list")
        entries = {e.key_id: e for e in map(TrustEntry.from_json, raw)}
        if serial == 1:
            signer = entries.get(root)
            if signer is None or root not in statement.key_ids:
                raise IntegrityError(
                    f"the store's first trust list is not signed by the pinned trust root "
                    f"{root[:16]}: wrong store or tampered trust list"
                )
        else:
            signer = next(
                (
                    current.active(k)
                    for k in statement.key_ids
                    if current.active(k) and current.entries[k].has_role("admin")
                ),
                None,
            ) or next(
                (
                    current.entries[k]
                    for k in statement.key_ids
                    if k in current.entries and is_self_revocation(current, entries, k)
                ),
                None,
            )
            if signer is None:
                raise IntegrityError(
                    f"trust list {serial} is not signed by an admin key of trust list "
                    f"{serial - 1}: it was written outside assay"
                )
        if not statement_signed_by(statement, signer.public_key):
            raise IntegrityError(f"trust list {serial} has a bad signature: tampered")
        current = TrustList(serial, entries, root)
    return current


def is_self_revocation(previous: TrustList, entries: dict[str, TrustEntry], key_id: str) -> bool:
    """Whether ``entries`` differ from ``previous`` only by ``key_id`` revoking itself further
    (a key may always narrow its own trust, even once revoked; nothing else changes)."""
    before, after = previous.entries.get(key_id), entries.get(key_id)
    if before is None or after is None or set(entries) != set(previous.entries):
        return False
    if any(entries[k] != previous.entries[k] for k in entries if k != key_id):
        return False
    same_otherwise = replace(
        after,
        revoked_at=before.revoked_at,
        revoke_reason=before.revoke_reason,
        compromised_since=before.compromised_since,
    )
    if same_otherwise != before or after.revoked_at is None:
        return False
    if before.revoked_at is not None and after.revoked_at != before.revoked_at:
        return False
    narrowed = before.compromised_since is None or (
        after.compromised_since is not None and after.compromised_since <= before.compromised_since
    )
    return narrowed


def revoked(entry: TrustEntry, *, at: datetime, reason: str, since: datetime | None) -> TrustEntry:
    """``entry`` revoked at ``at`` (the earliest compromise time wins; the first revocation stays)."""
    compromised = entry.compromised_since
    if since is not None and (compromised is None or since < compromised):
        compromised = since
    return replace(
        entry,
        revoked_at=entry.revoked_at or at,
        revoke_reason=entry.revoke_reason or reason,
        compromised_since=compromised,
    )

"""Records of the keys assay trusts, and the rule deciding when a signature stops verifying.

The keyring (files under ``$ASSAY_HOME/keys``) holds private keys; the store decides trust. A
signature verifies only with a key the store trusts, and only if it was recorded before the key's
revocation or compromise time: ``cutoff = min(revoked_at, compromised_since)``. A bundle the
store never recorded has no trustworthy signing time, so a revoked key's unrecorded signatures fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from assay.store.models import Key


class KeyRow(NamedTuple):
    """A ``keys`` row as the ``sqlite3`` readers return it (the ORM ``Key`` has the same fields)."""

    key_id: str
    name: str
    key_type: str
    created_at: datetime | None
    revoked_at: datetime | None
    revoke_reason: str | None
    compromised_since: datetime | None
    has_private: bool = False


@dataclass(frozen=True)
class KeyRecord:
    """What assay knows of one key."""

    key_id: str
    name: str
    key_type: str
    created_at: datetime | None
    has_private: bool
    trusted: bool
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    compromised_since: datetime | None = None
    roles: tuple[str, ...] = ()

    def has_role(self, role: str) -> bool:
        return self.trusted and (role in self.roles or "admin" in self.roles)

    @property
    def status(self) -> str:
        if self.compromised_since is not None:
            return "compromised"
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.trusted else "untrusted"

    @property
    def cutoff(self) -> datetime | None:
        """Signatures recorded at or after this time no longer verify."""
        times = [t for t in (self.revoked_at, self.compromised_since) if t is not None]
        return min(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {
            "key_id": self.key_id,
            "name": self.name,
            "key_type": self.key_type,
            "created_at": iso(self.created_at),
            "has_private": self.has_private,
            "trusted": self.trusted,
            "status": self.status,
            "revoked_at": iso(self.revoked_at),
            "revoke_reason": self.revoke_reason,
            "compromised_since": iso(self.compromised_since),
            "roles": list(self.roles),
        }

    @classmethod
    def from_row(cls, row: Key | KeyRow, has_private: bool | None = None) -> KeyRecord:
        """An untrusted record of a store row (see ``TrustList.key_record`` for the trusted one)."""
        return cls(
            key_id=row.key_id,
            name=row.name,
            key_type=row.key_type,
            created_at=row.created_at,
            has_private=row.has_private if has_private is None else has_private,
            trusted=False,  # a row alone grants nothing: trust comes from the signed trust list
            revoked_at=row.revoked_at,
            revoke_reason=row.revoke_reason,
            compromised_since=row.compromised_since,
        )


def signature_time_problem(record: KeyRecord, recorded_at: datetime | None) -> str | None:
    """Why a signature by ``record`` recorded at ``recorded_at`` must not verify, or None."""
    cutoff = record.cutoff
    if cutoff is None:
        return None
    what = "compromised since" if record.compromised_since == cutoff else "revoked at"
    if recorded_at is None:
        return (
            f"key {record.key_id[:16]} ({record.name}) was {what} {cutoff.isoformat()} and this "
            "signature was never recorded by assay, so it cannot be shown to predate that"
        )
    if recorded_at >= cutoff:
        return (
            f"key {record.key_id[:16]} ({record.name}) was {what} {cutoff.isoformat()}; this "
            f"signature was recorded later, at {recorded_at.isoformat()}"
        )
    return None

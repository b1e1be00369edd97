"""Who may sign: the rules both signing paths (SQLAlchemy and stdlib ``sqlite3``) apply.

A key signs only if the signed trust list holds it, it is not revoked or compromised, and it holds
the role the policy names; the audit actor is the id of the key this process acts with.
No SQLAlchemy here (``assay sign`` on the default SQLite store never imports it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from assay.core.errors import AssayError, RefusedError

if TYPE_CHECKING:
    from assay.core.settings import Settings
    from assay.integrity.keys import SigningKey
    from assay.trust.key_records import KeyRecord
    from assay.trust.trust_list import TrustList

__all__ = ["acting_key_id", "check_signer", "untrusted_hint", "untrusted_key"]


def untrusted_hint(key_id: str) -> str:
    return (
        f"key {key_id[:16]} is not trusted by this store: ask an admin to run "
        f"`assay key trust KEY.pem --name NAME --role signer` with its public key "
        "(`assay key export` prints it)"
    )


def untrusted_key(key_id: str, suffix: str = "") -> RefusedError:
    """The refusal of a key the trust list does not hold, with its hint."""
    return RefusedError(
        untrusted_hint(key_id) + suffix,
        hint=f"ask an admin to trust key {key_id[:16]} (`assay key export` on this machine "
        "prints the public key to send them)",
    )


def check_signer(key: SigningKey, trust: TrustList, role: str | None) -> KeyRecord:
    """``key``'s record if it may sign now with ``role``; ``RefusedError`` (one line) if not."""
    entry = trust.get(key.key_id)
    if entry is None:
        raise untrusted_key(key.key_id)
    record = entry.record(has_private=True)
    if record.cutoff is not None:
        raise RefusedError(
            f"key {key.key_id[:16]} ({record.name}) is {record.status}: refusing to sign with it"
        )
    if role is not None and not record.has_role(role):
        raise RefusedError(
            f"key {key.key_id[:16]} ({record.name}) lacks the {role!r} role: ask an admin to "
            f"run `assay key grant {key.key_id[:16]} --role {role}`"
        )
    return record


def acting_key_id(settings: Settings) -> str | None:
    """The id of the key this process acts with, if one can be loaded (else None)."""
    from assay.integrity.keyring import resolve_signing_key

    try:
        return resolve_signing_key(settings).key_id
    except (AssayError, OSError, ValueError):
        return None

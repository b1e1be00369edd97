"""API clients of ``assay serve``: a secret shown once, kept only as its SHA-256.

A ``serve_clients`` row grants nothing by itself. Every change (add, revoke, block, throttle) is
a signed ``serve.client-*`` change statement (``assay.trust.signed_changes``), and the clients
are evaluated against them as version states are: a client is accepted only if a verifying
``serve.client-add`` statement, signed by a key holding the policy's ``serve-clients`` role,
names the row's secret hash. A revocation, block or throttle applies if either the row or a
verifying statement says so (the stricter wins), so a database write can neither mint a key,
nor un-revoke, unblock or un-throttle a client. A row with no such statement is ``tampered``;
a client added before statements named the hash is ``legacy`` and refused too (fail closed:
revoke it and add a new client).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from assay.core.errors import AssayError, NotFoundError

if TYPE_CHECKING:
    from assay.registry.facade import Registry

__all__ = [
    "Client",
    "add_client",
    "block_client",
    "client_table",
    "hash_secret",
    "list_clients",
    "revoke_client",
    "throttle_client",
]

SECRET_PREFIX = "asy_"
SUBJECT_PREFIX = "serve-client:"
SIGNED, TAMPERED, LEGACY = "signed", "tampered", "legacy"
MAX_SECRET_CHARS = 200


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a secret (the secrets are 256 random bits: no slow hash is needed)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Client:
    name: str
    created_at: datetime
    revoked_at: datetime | None
    blocked_at: datetime | None
    throttle: dict[str, Any] | None
    reason: str | None
    #: ``signed`` (a signed statement names this secret hash), ``tampered`` (no statement
    #: behind the row, or one naming another hash) or ``legacy`` (added before statements
    #: named the hash): only ``signed`` clients are served.
    verdict: str = SIGNED

    @property
    def active(self) -> bool:
        return self.verdict == SIGNED and self.revoked_at is None and self.blocked_at is None

    @property
    def status(self) -> str:
        """What ``assay serve key list`` shows: tampered, legacy, revoked, blocked or active."""
        if self.verdict != SIGNED:
            return self.verdict
        return "revoked" if self.revoked_at else "blocked" if self.blocked_at else "active"

    def to_dict(self) -> dict[str, Any]:
        from assay.core.canonical import iso_utc

        return {
            "name": self.name,
            "status": self.status,
            "created_at": iso_utc(self.created_at),
            "revoked_at": iso_utc(self.revoked_at) if self.revoked_at else None,
            "blocked_at": iso_utc(self.blocked_at) if self.blocked_at else None,
            "throttle": self.throttle,
            "reason": self.reason,
        }


def _row_throttle(text: str | None) -> tuple[dict[str, Any] | None, bool]:
    """(throttle, readable) of a row's throttle column (bounded: 1000 characters)."""
    if not text:
        return None, True
    try:
        value = json.loads(text[:1000]) if len(text) <= 1000 else None
    except ValueError:
        value = None
    throttle = _throttle_of(value) if isinstance(value, dict) else None
    return throttle, throttle is not None


def _client(row: Any) -> Client:
    throttle, _ = _row_throttle(row.throttle)
    return Client(row.name, row.created_at, row.revoked_at, row.blocked_at, throttle, row.reason)


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200 or any(c.isspace() or not c.isprintable() for c in name):
        raise AssayError("a client name is 1-200 printable characters without spaces")
    return name


def add_client(registry: Registry, name: str) -> str:
    """Create client ``name``; return its secret (shown once, never stored)."""
    from sqlalchemy import select

    from assay.store.models import ServeClient

    name = _check_name(name)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    with registry.store.session() as session:
        if session.scalar(select(ServeClient.id).where(ServeClient.name == name)) is not None:
            raise AssayError(f"serving client {name!r} exists already (revoke it first)")
        digest = hash_secret(secret)
        session.add(ServeClient(name=name, secret_hash=digest))
        registry.record(session, "serve.client-add", SUBJECT_PREFIX + name, {"secret_hash": digest})
    return secret


def _update(
    registry: Registry, name: str, action: str, payload: dict[str, Any], **values
) -> Client:
    from sqlalchemy import select

    from assay.store.models import ServeClient

    with registry.store.session() as session:
        row = session.scalar(select(ServeClient).where(ServeClient.name == name))
        if row is None:
            raise NotFoundError(f"no serving client {name!r} (see `assay serve key list`)")
        for key, value in values.items():
            setattr(row, key, value)
        registry.record(session, action, SUBJECT_PREFIX + name, payload)
        return _evaluated(row, _signed_clients(registry, session).get(name))


def revoke_client(registry: Registry, name: str, reason: str | None = None) -> Client:
    from assay.store.models import utcnow

    return _update(
        registry,
        name,
        "serve.client-revoke",
        {"reason": reason},
        revoked_at=utcnow(),
        reason=reason,
    )


def block_client(registry: Registry, name: str, reason: str | None = None) -> Client:
    """Refuse every query of ``name`` (403) until unblocked; what the extraction playbook does."""
    from assay.store.models import utcnow

    return _update(
        registry, name, "serve.client-block", {"reason": reason}, blocked_at=utcnow(), reason=reason
    )


def throttle_client(
    registry: Registry, name: str, rate_per_second: float, burst: int, reason: str | None = None
) -> Client:
    """Lower ``name``'s token bucket below the policy's limits."""
    if not (rate_per_second > 0 and burst >= 1):
        raise AssayError("a throttle needs a positive rate and a burst of at least 1")
    value = {"rate_per_second": float(rate_per_second), "burst": int(burst)}
    return _update(
        registry,
        name,
        "serve.client-throttle",
        {**value, "reason": reason},
        throttle=json.dumps(value),
        reason=reason,
    )


@dataclass
class _Signed:
    """What the verifying statements of one client say (folded oldest first)."""

    secret_hash: str | None = None
    added: bool = False
    revoked_at: datetime | None = None
    blocked_at: datetime | None = None
    throttle: dict[str, Any] | None = None
    reason: str | None = None


#: The last trust list the client statements were verified against and the results (by
#: envelope SHA-256): one slot, replaced when the trust list changes; as large as the statements.
_MEMO: list[Any] = [None, {}]
_MEMO_LOCK = threading.Lock()


def _signed_clients(registry: Registry, session: Any) -> dict[str, _Signed]:
    """name -> what its signed ``serve.client-*`` statements say (one query for them all).

    An add counts only when signed by a key holding the ``serve-clients`` role; a revocation,
    block or throttle only restricts, so any verifying statement (a trusted key, signed before
    its cutoff) applies it.
    """
    from sqlalchemy import select

    from assay.store.models import Signature
    from assay.trust.signed_changes import CHANGE_PREFIX, role_holds, signed_changes

    trust = registry.keys.trust_list(session)
    policy = registry.policy(session)
    envelopes = session.execute(
        select(Signature.bundle, Signature.recorded_at).where(
            Signature.subject.startswith(CHANGE_PREFIX + SUBJECT_PREFIX, autoescape=True)
        )
    ).all()
    with _MEMO_LOCK:  # the server refreshes every few seconds: verify each statement once
        if _MEMO[0] is not trust:
            _MEMO[:] = [trust, {}]
        changes = signed_changes(envelopes, trust, subject_prefix=SUBJECT_PREFIX, memo=_MEMO[1])
    out: dict[str, _Signed] = {}
    for change in changes:
        name, payload = change.subject.removeprefix(SUBJECT_PREFIX), change.payload
        reason = payload.get("reason") if isinstance(payload.get("reason"), str) else None
        if change.action == "serve.client-add":
            if role_holds(change, trust, policy, "serve-clients"):
                digest = payload.get("secret_hash")
                out[name] = _Signed(digest if isinstance(digest, str) else None, True)
            continue
        signed = out.setdefault(name, _Signed())
        if change.action == "serve.client-revoke":
            signed.revoked_at = signed.revoked_at or change.at
        elif change.action == "serve.client-block":
            signed.blocked_at = signed.blocked_at or change.at
        elif change.action == "serve.client-throttle":
            signed.throttle = _stricter(signed.throttle, _throttle_of(payload))
        else:
            continue
        signed.reason = reason or signed.reason
    return out


def _throttle_of(payload: dict[str, Any]) -> dict[str, Any] | None:
    try:
        rate, burst = float(payload["rate_per_second"]), int(payload["burst"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (rate > 0 and burst >= 1):  # NaN and nonsense: not a throttle
        return None
    return {"rate_per_second": rate, "burst": burst}


def _stricter(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    if a is None or b is None:
        return a or b
    return {
        "rate_per_second": min(float(a["rate_per_second"]), float(b["rate_per_second"])),
        "burst": min(int(a["burst"]), int(b["burst"])),
    }


def _evaluated(row: Any, signed: _Signed | None) -> Client:
    """The client of ``row`` as its signed statements allow (the stricter of the two wins)."""
    client = _client(row)
    _, readable = _row_throttle(row.throttle)
    if signed is None or not signed.added or not readable:
        verdict = TAMPERED
    elif signed.secret_hash is None:
        verdict = LEGACY
    else:
        verdict = SIGNED if signed.secret_hash == row.secret_hash else TAMPERED
    if signed is None:
        signed = _Signed()
    return Client(
        client.name,
        client.created_at,
        client.revoked_at or signed.revoked_at,
        client.blocked_at or signed.blocked_at,
        _stricter(client.throttle, signed.throttle),
        client.reason or signed.reason,
        verdict,
    )


def list_clients(registry: Registry) -> list[Client]:
    """Every client row, evaluated against its signed statements (``status`` says how)."""
    from sqlalchemy import select

    from assay.store.models import ServeClient

    with registry.store.session(readonly=True) as session:
        signed = _signed_clients(registry, session)
        rows = session.scalars(select(ServeClient).order_by(ServeClient.name))
        return [_evaluated(r, signed.get(r.name)) for r in rows]


def client_table(registry: Registry) -> dict[str, Client]:
    """secret hash -> client, for the server's in-memory lookup (refreshed in the background).

    Only clients a signed statement vouches for (``verdict == "signed"``) are in it: a key of a
    tampered or legacy row is unknown (401).
    """
    from sqlalchemy import select

    from assay.store.models import ServeClient

    with registry.store.session(readonly=True) as session:
        signed = _signed_clients(registry, session)
        table = {}
        for row in session.scalars(select(ServeClient)):
            client = _evaluated(row, signed.get(row.name))
            if client.verdict == SIGNED:
                table[row.secret_hash] = client
        return table

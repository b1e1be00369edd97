"""API clients of ``assay serve``: a secret shown once, kept only as its SHA-256."""

from __future__ import annotations

import hashlib
import json
import secrets
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

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.blocked_at is None

    def to_dict(self) -> dict[str, Any]:
        from assay.core.canonical import iso_utc

        return {
            "name": self.name,
            "created_at": iso_utc(self.created_at),
            "revoked_at": iso_utc(self.revoked_at) if self.revoked_at else None,
            "blocked_at": iso_utc(self.blocked_at) if self.blocked_at else None,
            "throttle": self.throttle,
            "reason": self.reason,
        }


def _client(row: Any) -> Client:
    throttle = json.loads(row.throttle) if row.throttle else None
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
        session.add(ServeClient(name=name, secret_hash=hash_secret(secret)))
        registry.record(session, "serve.client-add", f"serve-client:{name}", {})
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
        registry.record(session, action, f"serve-client:{name}", payload)
        return _client(row)


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


def list_clients(registry: Registry) -> list[Client]:
    from sqlalchemy import select

    from assay.store.models import ServeClient

    with registry.store.session(readonly=True) as session:
        return [_client(r) for r in session.scalars(select(ServeClient).order_by(ServeClient.name))]


def client_table(registry: Registry) -> dict[str, Client]:
    """secret hash -> client, for the server's in-memory lookup (refreshed in the background)."""
    from sqlalchemy import select

    from assay.store.models import ServeClient

    with registry.store.session(readonly=True) as session:
        return {r.secret_hash: _client(r) for r in session.scalars(select(ServeClient))}

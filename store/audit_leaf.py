"""The bytes of one audit-log leaf (no SQLAlchemy: the sqlite3 signing path appends leaves too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from assay.core.canonical import canonical_json, iso_utc

__all__ = ["leaf_data"]


def leaf_data(
    *, seq: int, ts: datetime, actor: str, action: str, subject: str, payload: dict[str, Any]
) -> bytes:
    """Canonical JSON of ``{seq, ts, actor, action, subject, payload}`` (hashed into the leaf)."""
    return canonical_json(
        {
            "seq": seq,
            "ts": iso_utc(ts),
            "actor": actor,
            "action": action,
            "subject": subject,
            "payload": payload,
        }
    )

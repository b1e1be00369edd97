"""Canonical JSON: one byte string per value, for hashing and signing.

Rules: object keys must be strings and are sorted (by code point); no whitespace between tokens;
UTF-8 output with non-ASCII characters written as themselves; integers as decimal; floats as
Python's shortest round-trip repr; NaN and infinities rejected. Only ``dict``, ``list``/``tuple``,
``str``, ``int``, ``float``, ``bool`` and ``None`` are accepted: datetimes must be passed as ISO
strings (see :func:`iso_utc`), bytes as hex or base64 text.

This is close to, but not byte-for-byte, RFC 8785 (JCS): JCS sorts keys by UTF-16 code units and
formats floats the ECMAScript way. Keep floats out of signed statements where you can.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from assay.core.errors import FormatError

__all__ = ["canonical_json", "iso_utc", "parse_iso_utc"]

_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
)


def _check(value: Any, path: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise FormatError(
                f"cannot encode {path} as canonical JSON: NaN and infinity are not allowed"
            )
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise FormatError(
                    f"cannot encode {path} as canonical JSON: key {key!r} is not a string"
                )
            _check(item, f"{path}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    hint = " (pass datetimes as ISO strings)" if isinstance(value, datetime) else ""
    raise FormatError(
        f"cannot encode {path} as canonical JSON: {type(value).__name__} is not a JSON type{hint}"
    )


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (see the module docstring for the rules)."""
    _check(value, "$")
    return _ENCODER.encode(value).encode("utf-8")


def iso_utc(moment: datetime) -> str:
    """A timezone-aware datetime as fixed-width UTC ISO 8601: ``2024-05-01T12:00:00.000000Z``."""
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        raise FormatError(f"datetime {moment.isoformat()} has no timezone")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso_utc(text: str) -> datetime:
    """Parse an ISO 8601 timestamp with a timezone (``Z`` accepted) into an aware UTC datetime."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise FormatError(f"not an ISO 8601 timestamp: {text!r}") from exc
    if moment.tzinfo is None:
        raise FormatError(f"timestamp {text!r} has no timezone")
    return moment.astimezone(timezone.utc)

"""Incident notifications: a signed webhook POST and/or a JSON line appended to a file.

A notification never aborts containment: every failure comes back as ``delivered: false`` with the
error, and the engine records the step as ``succeeded-with-warnings``.

The webhook body is canonical JSON (sorted keys, no spaces, UTF-8). With ``secret_env`` the request
carries ``X-Assay-Signature: sha256=<hex HMAC-SHA256 of the body>`` keyed with the value of that
environment variable (the secret itself never appears in a playbook, a record or a log), and every
request carries ``X-Assay-Delivery: <id>``, stable across retries, so a receiver can drop duplicates
after a resumed incident sends twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["canonical_json", "redact_url", "send_notification", "sign_body"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
SIGNATURE_HEADER = "X-Assay-Signature"
DELIVERY_HEADER = "X-Assay-Delivery"


def canonical_json(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode("utf-8")


def sign_body(body: bytes, secret: str | bytes) -> str:
    """The ``X-Assay-Signature`` header value for a body."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def redact_url(url: str) -> str:
    """Scheme, host and port only: webhook paths and queries often hold tokens."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/..."


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("webhook must be an http(s) URL")
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked
        return {"status": response.status}


def _append_line(path: Path, body: bytes, delivery_id: str) -> bool:
    """Append one JSON line; skip it if this delivery id is already there (resumed incident)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = f'"delivery_id":{json.dumps(delivery_id)}'.encode()
    if path.exists() and path.stat().st_size < 64 * 1024 * 1024:
        with path.open("rb") as fh:
            if any(marker in line for line in fh):
                return False
    with path.open("ab") as fh:
        fh.write(body + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return True


def send_notification(
    payload: dict[str, Any],
    *,
    delivery_id: str,
    webhook: str | None = None,
    secret_env: str | None = None,
    file: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Deliver ``payload``; never raises. Returns ``{delivered, error, webhook, file}``.

    ``delivered`` is true only when every requested channel worked.
    """
    body = canonical_json({**payload, "delivery_id": delivery_id})
    errors: list[str] = []
    out: dict[str, Any] = {"delivery_id": delivery_id}
    if not webhook and not file:
        errors.append("no webhook or file given")
    if webhook:
        target = redact_url(str(webhook))
        result: dict[str, Any] = {"url": target}
        try:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "assay-incident",
                DELIVERY_HEADER: delivery_id,
            }
            if secret_env:
                secret = os.environ.get(secret_env)
                if not secret:
                    raise ValueError(f"environment variable {secret_env} is not set")
                headers[SIGNATURE_HEADER] = sign_body(body, secret)
            result.update(_post(str(webhook), body, headers, float(timeout)))
            result["ok"] = True
        except urllib.error.HTTPError as exc:
            result.update(ok=False, status=exc.code)
            errors.append(f"webhook {target} answered HTTP {exc.code}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            result["ok"] = False
            errors.append(f"webhook {target}: {reason}")
        out["webhook"] = result
    if file:
        try:
            written = _append_line(Path(file), body, delivery_id)
            out["file"] = {"path": str(file), "ok": True, "appended": written}
        except OSError as exc:
            out["file"] = {"path": str(file), "ok": False}
            errors.append(f"file {file}: {exc.strerror or exc}")
    out["delivered"] = not errors
    out["error"] = "; ".join(errors) if errors else None
    if errors:
        log.warning("notification %s not delivered: %s", delivery_id, out["error"])
    return out

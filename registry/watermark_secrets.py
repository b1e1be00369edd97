"""Watermark secrets: kept in the keyring folder, separate from signing keys.

A secret is 32 random bytes in ``$ASSAY_HOME/keys/watermark-<fingerprint[:16]>.secret`` (0600).
Only its fingerprint (``assay.watermark.scheme.fingerprint``) leaves that file: in the store, the
watermark records and the audit log, where its registration time is a public commitment made
before any dispute. ``ASSAY_WATERMARK_SECRET`` (hex) supplies one from the environment for CI.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from assay.core.atomic import write_new_file
from assay.core.errors import ConfigError, FormatError

if TYPE_CHECKING:
    from assay.registry.facade import Registry

ENV = "ASSAY_WATERMARK_SECRET"
_PREFIX, _SUFFIX = "watermark-", ".secret"


def _fingerprint(secret: bytes) -> str:
    from assay.watermark.scheme import fingerprint

    return fingerprint(secret)


def _files(keys_dir: Path) -> list[Path]:
    return sorted(keys_dir.glob(f"{_PREFIX}*{_SUFFIX}")) if keys_dir.is_dir() else []


def _read(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as exc:
        raise FormatError(f"unreadable watermark secret {path}: {exc}") from exc


def active_secret(registry: Registry, *, create: bool = True) -> bytes:
    """The secret new registrations use: ``ASSAY_WATERMARK_SECRET``, else the keyring's newest.

    With ``create``, the first call makes one and records its fingerprint in the audit log.
    """
    secret, keep = pending_secret(registry, create=create)
    if keep is not None:
        keep()
    return secret


def pending_secret(
    registry: Registry, *, create: bool = True
) -> tuple[bytes, Callable[[], None] | None]:
    """:func:`active_secret`, but a new secret exists only in memory until its ``keep()`` writes
    it (0600 file) and records its fingerprint in the audit log (``keep`` is None for an existing
    secret). Registration marks its staged copy first and keeps the secret only once every weight
    file was marked, so a registration that fails on a broken weight file leaves no secret and no
    audit event; it keeps it before any marked byte leaves the process (the MLflow upload)."""
    env = os.environ.get(ENV)
    if env:
        try:
            return bytes.fromhex(env.strip()), None
        except ValueError as exc:
            raise ConfigError(f"{ENV} must be hex") from exc
    keys_dir = registry.settings.keys_dir
    existing = _files(keys_dir)
    if existing:
        return _read(max(existing, key=lambda p: p.stat().st_mtime_ns)), None
    if not create:
        raise ConfigError("no watermark secret: register a model with a watermark first")
    secret = secrets.token_bytes(32)

    def keep() -> None:
        fp = _fingerprint(secret)
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = keys_dir / f"{_PREFIX}{fp[:16]}{_SUFFIX}"
        write_new_file(path, (secret.hex() + "\n").encode("ascii"), 0o600, what="a secret")
        with registry.store.session() as session:
            registry.record(session, "watermark.secret", f"watermark:{fp}", {"fingerprint": fp})

    return secret, keep


def all_secrets(registry: Registry) -> dict[str, bytes]:
    """Every secret this installation holds, by fingerprint."""
    found = {}
    env = os.environ.get(ENV)
    if env:
        secret = bytes.fromhex(env.strip())
        found[_fingerprint(secret)] = secret
    for path in _files(registry.settings.keys_dir):
        secret = _read(path)
        found[_fingerprint(secret)] = secret
    return found

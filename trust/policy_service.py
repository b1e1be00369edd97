"""Read and change the store's policy (``assay policy show | set FILE | verify``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from assay.core.errors import FormatError
from assay.trust.policy import MAX_POLICY_BYTES, POLICY_SUBJECT, Policy, parse_policy_text

if TYPE_CHECKING:
    from assay.registry.facade import Registry

__all__ = ["read_policy_file", "set_policy"]


def read_policy_file(path: Path) -> Policy:
    """Parse a policy file: a regular file of at most 64 KiB, YAML without aliases."""
    import os
    import stat

    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError as exc:
        raise FormatError(f"cannot open policy file {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FormatError(f"policy file {path} is not a regular file")
        if info.st_size > MAX_POLICY_BYTES:
            raise FormatError(f"policy file {path} is larger than {MAX_POLICY_BYTES // 1024} KiB")
        data = os.read(fd, MAX_POLICY_BYTES + 1)
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"policy file {path} is not UTF-8 text") from exc
    return parse_policy_text(text)


def set_policy(registry: Registry, policy: Policy) -> Policy:
    """Store ``policy`` as the next serial, signed by the acting admin key, with an audit event."""
    from dataclasses import replace

    from assay.store.models import utcnow
    from assay.store.store import lock_store
    from assay.trust.key_service import store_document

    with registry.store.session() as session:
        lock_store(session)
        trust = registry.keys.trust_list(session)
        current = registry.policy(session)
        key = registry.keys.admin_key(trust)
        serial = current.serial + 1
        now = utcnow()
        store_document(session, POLICY_SUBJECT, key.key_id, policy.sign(key, serial, now), now)
        registry.record(
            session, "policy.set", POLICY_SUBJECT, {"serial": serial, **policy.document()}
        )
        return replace(policy, serial=serial, signed_by=key.key_id, issued_at=now)

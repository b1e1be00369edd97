"""Labels on model versions: free-form evidence such as ``robust`` (passed adversarial evaluation).

A label is a claim someone made about a version, not a state: it does not change what may serve.
Playbooks read them (the adversarial-evasion playbook rolls back only to a version labelled
``robust``). Every change is appended to the audit log with the actor and reason, and mirrored
best effort into the ``assay.labels`` MLflow version tag.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING

from assay.core.errors import AssayError
from assay.core.tags import LABELS_TAG
from assay.registry.versions import (
    VersionRecord,
    display,
    record_of,
    require_artifact,
    state_row,
)

if TYPE_CHECKING:
    from assay.registry.facade import Registry

__all__ = ["LABELS_TAG", "set_labels"]

log = logging.getLogger(__name__)

_LABEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def _check(label: str) -> str:
    if not _LABEL.match(label):
        raise AssayError(
            f"invalid label {label!r}: use 1-63 lower-case letters, digits, '.', '_' or '-'"
        )
    return label


def set_labels(
    registry: Registry,
    name: str,
    version: str,
    *,
    add: list[str] | tuple[str, ...] = (),
    remove: list[str] | tuple[str, ...] = (),
    reason: str | None = None,
) -> VersionRecord:
    """Add and remove labels on model version ``name``/``version``; audited when anything changed."""
    add = [_check(x) for x in add]
    remove = [_check(x) for x in remove]
    if set(add) & set(remove):
        raise AssayError(
            f"label(s) both added and removed: {', '.join(sorted(set(add) & set(remove)))}"
        )
    version = str(version)
    with registry.store.session() as session:
        artifact = require_artifact(session, "model", name, version)
        row = state_row(session, artifact)
        before = json.loads(row.labels or "[]")
        after = sorted((set(before) | set(add)) - set(remove))
        if after != sorted(before):
            row.labels = json.dumps(after)
            registry.record(
                session,
                "model.labels",
                display("model", name, version),
                {"from": sorted(before), "to": after, "reason": reason},
            )
        record = record_of(session, artifact)
    try:
        registry.backend.set_version_tag(name, version, LABELS_TAG, ",".join(after))
    except (AssayError, ImportError, OSError) as exc:
        log.warning(
            "labelled %s but could not tag it in MLflow (%s)", display("model", name, version), exc
        )
    return record

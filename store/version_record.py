"""``VersionRecord``: one model or dataset version as assay's store knows it.

Kept apart from ``assay.registry.versions`` (SQLAlchemy queries) so that the read-only
``sqlite3`` views (``assay.registry.fast_read``) return the very same records without importing
SQLAlchemy; ``versions`` re-exports everything here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "KIND_LABEL",
    "NO_STATE",
    "VersionRecord",
    "display",
    "record_from_row",
    "ref_key",
    "version_key",
]

KIND_LABEL = {"model": "model", "dataset": "dataset"}


def version_key(version: str | None) -> int:
    """Sort key for MLflow-style numeric versions."""
    try:
        return int(version or 0)
    except ValueError:
        return 0


def display(kind: str, name: str, version: str | None) -> str:
    """``models:/NAME/V`` or ``dataset:NAME@V``."""
    return f"models:/{name}/{version}" if kind == "model" else f"dataset:{name}@{version}"


def parse_display(subject: str) -> tuple[str, str, str] | None:
    """(kind, name, version) of a :func:`display` subject, or None for any other subject."""
    if subject.startswith("models:/"):
        name, sep, version = subject[len("models:/") :].rpartition("/")
        if sep and name and version and "@" not in version:
            return "model", name, version
    elif subject.startswith("dataset:"):
        name, sep, version = subject[len("dataset:") :].rpartition("@")
        if sep and name and version:
            return "dataset", name, version
    return None


@dataclass
class VersionRecord:
    """One model or dataset version with its registry state."""

    kind: str
    name: str
    version: str
    state: str
    status: str
    manifest_root: str | None
    created_at: datetime | None
    reason: str | None = None
    incident_id: str | None = None
    key_id: str | None = None
    run_id: str | None = None
    source: str | None = None
    uri: str | None = None
    labels: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return display(self.kind, self.name, self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "state": self.state,
            "status": self.status,
            "reason": self.reason,
            "incident_id": self.incident_id,
            "manifest_root": self.manifest_root,
            "key_id": self.key_id,
            "run_id": self.run_id,
            "source": self.source,
            "labels": self.labels,
            "datasets": self.datasets,
            "parents": self.parents,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


#: The state fields of a version with no state row (signed before registry tables existed, or a
#: plain path): ``(state, status, reason, incident_id, run_id, source, labels JSON)``.
NO_STATE: tuple[Any, ...] = ("registered", "complete", None, None, None, None, "[]")


def ref_key(ref: str) -> tuple[str, int]:
    """Sort key of a ``NAME/V`` or ``NAME@V`` lineage reference: name, then numeric version."""
    name, _, version = ref.replace("@", "/").rpartition("/")
    return name, version_key(version)


def record_from_row(
    kind: str,
    name: str,
    version: str | None,
    *,
    uri: str | None,
    manifest_root: str | None,
    created_at: datetime | None,
    state: Sequence[Any] | None,
    key_id: str | None,
    lineage: Iterable[tuple[str, str | None, str]],
) -> VersionRecord:
    """The one row-to-record mapper, for the ORM and the ``sqlite3`` readers alike.

    ``state``: ``(state, status, reason, incident_id, run_id, source, labels JSON)`` or None
    (:data:`NO_STATE`); ``lineage``: ``(parent name, parent version, relation)`` of each parent.
    Datasets (``trained-on``) and parent models (``fine-tuned-from``) are sorted by name, then
    numeric version, so every command lists lineage in the same order.
    """
    st, status, reason, incident_id, run_id, source, labels = state or NO_STATE
    edges = list(lineage)
    return VersionRecord(
        kind=kind,
        name=name,
        version=version or "",
        state=st,
        status=status,
        reason=reason,
        incident_id=incident_id,
        manifest_root=manifest_root,
        created_at=created_at,
        key_id=key_id,
        run_id=run_id,
        source=source,
        uri=uri,
        labels=json.loads(labels or "[]"),
        datasets=sorted((f"{n}@{v}" for n, v, rel in edges if rel == "trained-on"), key=ref_key),
        parents=sorted(
            (f"{n}/{v}" for n, v, rel in edges if rel == "fine-tuned-from"), key=ref_key
        ),
    )

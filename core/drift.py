"""Kinds of drift between assay's store and MLflow, with the one-line description `assay status
--help` lists (generated from this table, so help and code cannot disagree)."""

from __future__ import annotations

from enum import Enum

__all__ = ["DRIFT_KINDS", "DriftKind", "describe_drift_kinds"]


class DriftKind(str, Enum):
    """What disagrees between assay's store and MLflow."""

    ALIAS_MOVED = "alias-moved-outside-assay"
    UNSIGNED_VERSION = "unsigned-version"
    PENDING_REGISTRATION = "pending-registration"
    TAG_MISMATCH = "tag-mismatch"
    VERSION_MISSING = "version-missing"
    SERVING_BAD_VERSION = "serving-bad-version"
    UNMANAGED = "unmanaged"
    BYTES_CHANGED = "bytes-changed"

    def __str__(self) -> str:
        return self.value

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    DriftKind.ALIAS_MOVED: "an alias set, moved or deleted with plain MLflow",
    DriftKind.UNSIGNED_VERSION: "an MLflow version assay never signed",
    DriftKind.PENDING_REGISTRATION: "a registration that never completed (assay.pending)",
    DriftKind.TAG_MISMATCH: "an assay.* tag that disagrees with the store",
    DriftKind.VERSION_MISSING: "a recorded version gone from MLflow",
    DriftKind.SERVING_BAD_VERSION: "an alias serving a quarantined/compromised version",
    DriftKind.UNMANAGED: "a registered model assay never registered",
    DriftKind.BYTES_CHANGED: "(--deep) stored bytes that no longer verify",
}

DRIFT_KINDS = tuple(k.value for k in DriftKind)


def describe_drift_kinds(indent: str = "  ") -> str:
    """One line per kind, aligned: the list `assay status --help` shows."""
    width = max(len(k.value) for k in DriftKind)
    return "\n".join(f"{indent}{k.value:<{width}}  {k.description}" for k in DriftKind)

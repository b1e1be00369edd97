"""Rollback: pick the last known-good target (``selection``) and move the alias exactly once
(``execute``).
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "RollbackPlan": "assay.rollback.selection",
    "plan_rollback": "assay.rollback.selection",
    "RollbackResult": "assay.rollback.execute",
    "rollback": "assay.rollback.execute",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

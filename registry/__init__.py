"""The registry's domain: the :class:`Registry` facade, versions and their states, serving moves,
freezes, status and drift, lineage, labels, datasets, registration, re-signing, the enforcement
decision and the fast read paths.
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "InitResult": "assay.registry.facade",
    "Registry": "assay.registry.facade",
    "freeze": "assay.registry.states",
    "mark": "assay.registry.states",
    "move_alias": "assay.registry.states",
    "promote": "assay.registry.states",
    "unfreeze": "assay.registry.states",
    "DriftFinding": "assay.registry.status",
    "DriftKind": "assay.registry.status",
    "StatusReport": "assay.registry.status",
    "status": "assay.registry.status",
    "blast_radius": "assay.registry.lineage",
    "lineage": "assay.registry.lineage",
    "set_labels": "assay.registry.labels",
    "Decision": "assay.registry.enforcement",
    "decide": "assay.registry.enforcement",
    "RegisterResult": "assay.registry.registration",
    "register_model": "assay.registry.registration",
    "register_dataset": "assay.registry.datasets",
    "VersionRecord": "assay.store.version_record",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

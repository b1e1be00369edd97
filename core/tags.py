"""The ``assay.*`` MLflow tag names: one place, so every writer and reader agree.

Version tags mirror assay's store for people using the MLflow UI; assay never trusts them (the
store is the truth, and ``assay status`` reports a tag that disagrees as drift). Run tags mark
the runs registration and dataset registration create.
"""

from __future__ import annotations

__all__ = [
    "DATASET_TAG",
    "KEY_ID_TAG",
    "KIND_TAG",
    "LABELS_TAG",
    "MANIFEST_TAG",
    "MODEL_TAG",
    "PENDING_TAG",
    "REGISTRAR_TAG",
    "STATE_TAG",
]

#: Version tag: the version's state (``registered``, ``known-good``, ``quarantined`` ...).
STATE_TAG = "assay.state"
#: Version tag: the manifest root of a registration not yet recorded in the store.
PENDING_TAG = "assay.pending"
#: Version tag (and run tag): the manifest root digest.
MANIFEST_TAG = "assay.manifest"
#: Version tag: the id of the key that signed the version.
KEY_ID_TAG = "assay.key_id"
#: Version tag: the version's labels, comma-separated.
LABELS_TAG = "assay.labels"
#: Run tag: the registered model a registration run uploads.
MODEL_TAG = "assay.model"
#: Run tag naming the process uploading: ``host:pid`` (to tell a live upload from an orphan).
REGISTRAR_TAG = "assay.registrar"
#: Run tags of a dataset registration run.
KIND_TAG = "assay.kind"
DATASET_TAG = "assay.dataset"

"""The integrity core: hashing, manifests, OMS signatures, keys, store, audit log, MLflow.

Names are imported lazily (PEP 562) so that ``import assay.registry.x`` stays cheap: the CLI
must start fast and most commands need only a few of these modules.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Registry": "assay.registry.facade",
    "InitResult": "assay.registry.facade",
    "KeyRecord": "assay.integrity.trust",
    "SignResult": "assay.integrity.signing",
    "VerifyReport": "assay.integrity.verification",
    "Manifest": "assay.integrity.manifest",
    "build_manifest": "assay.integrity.manifest",
    "sign_manifest": "assay.integrity.oms",
    "parse_bundle": "assay.integrity.oms",
    "verify_bundle": "assay.integrity.oms",
    "generate_key": "assay.integrity.keys",
    "SigningKey": "assay.integrity.keys",
    "PublicKey": "assay.integrity.keys",
    "Keyring": "assay.integrity.keyring",
    "Store": "assay.store.store",
    "AuditLog": "assay.store.audit",
    "AuditReport": "assay.store.audit",
    "load_model": "assay.integrations.loading",
    "set_labels": "assay.registry.labels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'assay.registry' has no attribute {name!r}")
    return getattr(import_module(module), name)

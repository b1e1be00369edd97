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
    "KeyRecord": "assay.registry.trust",
    "SignResult": "assay.registry.signing",
    "VerifyReport": "assay.registry.verification",
    "Manifest": "assay.registry.manifest",
    "build_manifest": "assay.registry.manifest",
    "sign_manifest": "assay.registry.oms",
    "parse_bundle": "assay.registry.oms",
    "verify_bundle": "assay.registry.oms",
    "generate_key": "assay.registry.keys",
    "SigningKey": "assay.registry.keys",
    "PublicKey": "assay.registry.keys",
    "Keyring": "assay.registry.keyring",
    "Store": "assay.registry.store",
    "AuditLog": "assay.registry.audit",
    "AuditReport": "assay.registry.audit",
    "load_model": "assay.registry.loading",
    "set_labels": "assay.registry.labels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'assay.registry' has no attribute {name!r}")
    return getattr(import_module(module), name)

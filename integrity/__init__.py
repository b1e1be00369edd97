"""Hashing, manifests and OpenSSF Model Signing bundles; keys, the trust list, the signed policy and
signed state changes: everything assay checks a signature with. Above ``assay.store`` (key and
policy services write through it), beside ``assay.mlflow_access``.
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "hash_file": "assay.integrity.hashing",
    "Manifest": "assay.integrity.manifest",
    "build_manifest": "assay.integrity.manifest",
    "Bundle": "assay.integrity.oms",
    "parse_bundle": "assay.integrity.oms",
    "sign_manifest": "assay.integrity.oms",
    "verify_bundle": "assay.integrity.oms",
    "PublicKey": "assay.integrity.keys",
    "SigningKey": "assay.integrity.keys",
    "generate_key": "assay.integrity.keys",
    "Keyring": "assay.integrity.keyring",
    "KeyRecord": "assay.integrity.trust",
    "TrustList": "assay.integrity.trust_list",
    "evaluate_trust_list": "assay.integrity.trust_list",
    "Policy": "assay.integrity.policy",
    "load_policy": "assay.integrity.policy",
    "SignResult": "assay.integrity.signing",
    "sign_path": "assay.integrity.signing",
    "VerifyReport": "assay.integrity.verification",
    "verify_path": "assay.integrity.verification",
    "KeyService": "assay.integrity.key_service",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

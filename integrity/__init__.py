"""Hashing, manifests, OpenSSF Model Signing bundles and key material: pure functions over files and
bytes (no store, no MLflow). ``assay.trust`` decides which keys count.
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
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

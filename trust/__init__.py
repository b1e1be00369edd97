"""Who is trusted, and signing and verifying against it: key records and the signing-time rule, the
one signed-statement mechanism, the trust list back to the pinned root, the signed policy, signed
state changes, the key and policy services, signing a path and recording it, verifying a path.
Above ``assay.integrity`` and ``assay.store``.
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "KeyRecord": "assay.trust.key_records",
    "TrustList": "assay.trust.trust_list",
    "evaluate_trust_list": "assay.trust.trust_list",
    "Policy": "assay.trust.policy",
    "load_policy": "assay.trust.policy",
    "SignResult": "assay.trust.signing",
    "sign_path": "assay.trust.signing",
    "VerifyReport": "assay.trust.verification",
    "verify_path": "assay.trust.verification",
    "KeyService": "assay.trust.key_service",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

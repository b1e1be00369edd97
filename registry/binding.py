"""The registration binding: a second signed statement tying a bundle to its registry identity.

An OMS bundle says "these bytes were signed"; it does not say which model version they are. The
binding is a DSSE envelope over an in-toto statement whose subject is ``models:/NAME/VERSION``
(or ``dataset:NAME@VERSION``) with the manifest root as digest, and whose predicate records the
lineage (dataset roots, parent versions). Verification checks it names the version being
verified and the same manifest root, so a valid bundle cannot be replayed onto another version.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from assay.core.errors import IntegrityError
from assay.registry.canonical import canonical_json
from assay.registry.keys import PublicKey, SigningKey
from assay.registry.oms import PAYLOAD_TYPE, STATEMENT_TYPE, pae

PREDICATE_TYPE = "urn:assay:registration:v1"
SUBJECT_PREFIX = "binding:"


def make_binding(
    key: SigningKey,
    *,
    subject: str,
    manifest_root: str,
    lineage: dict[str, Any],
) -> str:
    """Sign ``subject`` (e.g. ``models:/churn/3``) as the identity of ``manifest_root``."""
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject, "digest": {"sha256": manifest_root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": lineage,
    }
    payload = canonical_json(statement)
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [
            {"keyid": key.key_id, "sig": base64.b64encode(key.sign(pae(payload))).decode("ascii")}
        ],
    }
    return json.dumps(envelope, sort_keys=True)


def read_binding(envelope_text: str) -> tuple[dict[str, Any], bytes, list[tuple[str, bytes]]]:
    """(statement, payload, [(keyid, signature)]) of a binding envelope; IntegrityError if corrupt."""
    try:
        envelope = json.loads(envelope_text)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [
            (s["keyid"], base64.b64decode(s["sig"], validate=True)) for s in envelope["signatures"]
        ]
        statement = json.loads(payload)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise IntegrityError("corrupt registration binding in the store") from exc
    if (
        envelope.get("payloadType") != PAYLOAD_TYPE
        or statement.get("predicateType") != PREDICATE_TYPE
    ):
        raise IntegrityError("the registration binding is not an assay registration statement")
    return statement, payload, signatures


def check_binding(
    envelope_text: str, public_key: PublicKey, *, subject: str, manifest_root: str
) -> list[str]:
    """Problems with a binding for ``subject`` over ``manifest_root`` (empty: it holds)."""
    statement, payload, signatures = read_binding(envelope_text)
    problems = []
    if not any(public_key.verify(sig, pae(payload)) for _, sig in signatures):
        problems.append(f"registration binding does not verify with key {public_key.key_id[:16]}")
    subjects = statement.get("subject") or [{}]
    named = subjects[0].get("name")
    digest = (subjects[0].get("digest") or {}).get("sha256")
    if named != subject:
        problems.append(f"registration binding names {named}, not {subject} (replayed signature?)")
    if digest != manifest_root:
        problems.append("registration binding covers other bytes than the signature bundle")
    return problems

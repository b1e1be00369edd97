"""Signed statements: DSSE envelopes over in-toto Statement v1, the one mechanism assay signs with.

Registration bindings, the trust list, the policy and every state change (mark, promote, label,
freeze, rollback) are statements: ``subject`` names what the statement is about with a SHA-256
digest, ``predicateType`` says which kind it is (``urn:assay:...``), ``predicate`` holds the
content. :func:`sign_statement` makes the envelope, :func:`open_statement` parses it (bounded,
``IntegrityError`` on anything malformed) and :func:`statement_signed_by` checks a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from assay.core.canonical import canonical_json
from assay.core.errors import IntegrityError
from assay.core.safe_json import loads_untrusted
from assay.integrity.keys import PublicKey, SigningKey
from assay.integrity.oms import PAYLOAD_TYPE, STATEMENT_TYPE, pae

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "Statement",
    "digest_of",
    "open_statement",
    "sign_statement",
    "statement_signed_by",
]

#: Envelopes above this size are refused before parsing (they come from the store, which an
#: attacker may have written).
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Statement:
    """A parsed envelope: the statement, its exact payload bytes and its signatures."""

    predicate_type: str
    subject: str
    digest: str
    predicate: dict[str, Any]
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.signatures)


def digest_of(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def sign_statement(
    key: SigningKey, *, predicate_type: str, subject: str, digest: str, predicate: dict[str, Any]
) -> str:
    """A DSSE envelope (JSON text) signed by ``key`` over the statement."""
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject, "digest": {"sha256": digest}}],
        "predicateType": predicate_type,
        "predicate": predicate,
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


def open_statement(envelope_text: str, predicate_type: str, *, what: str) -> Statement:
    """Parse an envelope of ``predicate_type``; ``IntegrityError`` naming ``what`` otherwise."""
    if not isinstance(envelope_text, str) or len(envelope_text) > MAX_ENVELOPE_BYTES:
        raise IntegrityError(f"corrupt {what} in the store (missing or oversized)")
    try:
        envelope = loads_untrusted(envelope_text, what=what, error=IntegrityError)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = tuple(
            (str(s["keyid"]), base64.b64decode(s["sig"], validate=True))
            for s in envelope["signatures"]
        )
        statement = loads_untrusted(payload, what=what, error=IntegrityError)
        first = statement["subject"][0]
        subject, digest = first["name"], first["digest"]["sha256"]
        predicate = statement.get("predicate")
    except (ValueError, KeyError, TypeError, IndexError, binascii.Error, RecursionError) as exc:
        raise IntegrityError(f"corrupt {what} in the store") from exc
    if (
        not isinstance(envelope, dict)
        or envelope.get("payloadType") != PAYLOAD_TYPE
        or statement.get("_type") != STATEMENT_TYPE
        or statement.get("predicateType") != predicate_type
        or not isinstance(subject, str)
        or not isinstance(digest, str)
        or not isinstance(predicate, dict)
    ):
        raise IntegrityError(f"the {what} in the store is not an assay {predicate_type} statement")
    return Statement(predicate_type, subject, digest, predicate, payload, signatures)


def statement_signed_by(statement: Statement, public_key: PublicKey) -> bool:
    """True when one of the statement's signatures verifies with ``public_key``."""
    message = pae(statement.payload)
    return any(public_key.verify(sig, message) for _, sig in statement.signatures)

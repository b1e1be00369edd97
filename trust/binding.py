"""The registration binding: a second signed statement tying a bundle to its registry identity.

An OMS bundle says "these bytes were signed"; it does not say which model version they are. The
binding is a DSSE envelope over an in-toto statement whose subject is ``models:/NAME/VERSION``
(or ``dataset:NAME@VERSION``) with the manifest root as digest, and whose predicate records the
lineage (dataset roots, parent versions). Verification checks it names the version being
verified and the same manifest root, so a valid bundle cannot be replayed onto another version.
"""

from __future__ import annotations

from typing import Any

from assay.integrity.keys import PublicKey, SigningKey
from assay.trust.statements import open_statement, sign_statement, statement_signed_by

PREDICATE_TYPE = "urn:assay:registration:v1"
SUBJECT_PREFIX = "binding:"
_WHAT = "registration binding"


def make_binding(
    key: SigningKey,
    *,
    subject: str,
    manifest_root: str,
    lineage: dict[str, Any],
) -> str:
    """Sign ``subject`` (e.g. ``models:/churn/3``) as the identity of ``manifest_root``."""
    return sign_statement(
        key, predicate_type=PREDICATE_TYPE, subject=subject, digest=manifest_root, predicate=lineage
    )


def binding_lineage(envelope_text: str) -> dict[str, Any]:
    """The lineage predicate of a binding envelope; IntegrityError if corrupt."""
    return open_statement(envelope_text, PREDICATE_TYPE, what=_WHAT).predicate


def check_binding(
    envelope_text: str, public_key: PublicKey, *, subject: str, manifest_root: str
) -> list[str]:
    """Problems with a binding for ``subject`` over ``manifest_root`` (empty: it holds)."""
    statement = open_statement(envelope_text, PREDICATE_TYPE, what=_WHAT)
    problems = []
    if not statement_signed_by(statement, public_key):
        problems.append(f"registration binding does not verify with key {public_key.key_id[:16]}")
    if statement.subject != subject:
        problems.append(
            f"registration binding names {statement.subject}, not {subject} (replayed signature?)"
        )
    if statement.digest != manifest_root:
        problems.append("registration binding covers other bytes than the signature bundle")
    return problems

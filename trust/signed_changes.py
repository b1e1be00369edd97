"""Signed state changes: every mark, promote, label, freeze and rollback is a signed statement.

:meth:`assay.registry.facade.Registry.record` calls :func:`policy_action` for each audit event;
when the event is a state change it signs a statement (``urn:assay:change:v1``) with the acting
key, which must hold the role the policy names for that action, and stores it in the
``signatures`` table under ``change:<subject>`` next to the audit event. The statement's subject
digest is the version's manifest root when the subject is a version, so a statement cannot be
moved onto other bytes.

At load, :func:`signed_state` gives the newest *verifying* state statement of a version, which the
enforcement decision compares with the state row (a row edited in the database disagrees) and,
behind a protected alias, requires to say ``known-good`` signed by a key with the right role.
:func:`signed_changes` gives the verifying statements of a family of subjects (the API clients of
``assay serve``, ``serve-client:NAME``), from which the server's credential table is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from assay.core.canonical import iso_utc, parse_iso_utc
from assay.core.errors import FormatError, IntegrityError
from assay.core.states import BAD_STATES
from assay.trust.key_records import signature_time_problem
from assay.trust.statements import (
    digest_of,
    open_statement,
    sign_statement,
    statement_signed_by,
)

if TYPE_CHECKING:
    from assay.integrity.keys import SigningKey
    from assay.trust.policy import Policy
    from assay.trust.trust_list import TrustList

__all__ = [
    "CHANGE_PREFIX",
    "PREDICATE_TYPE",
    "SignedChange",
    "actor_label",
    "policy_action",
    "sign_change",
    "signed_changes",
    "signed_state",
]

PREDICATE_TYPE = "urn:assay:change:v1"
CHANGE_PREFIX = "change:"
STATE_ACTIONS = ("model.state", "dataset.state")


def policy_action(action: str, payload: dict[str, Any], policy: Policy | None = None) -> str | None:
    """The policy action (see ``assay.trust.policy.ACTIONS``) an audit action is, or None
    when the event is not a state change and is not signed.

    Setting an alias that is not protected while registering is part of registering (a CI
    ``signer`` may ``assay register ... --alias staging``); every other alias move is a promotion
    (or a rollback).
    """
    if action in STATE_ACTIONS:
        to = payload.get("to")
        if to == "known-good":
            return "mark-known-good"
        return "mark-bad" if to in BAD_STATES else "mark-other"
    if action in ("alias.intent", "alias.move"):
        via = payload.get("via")
        if via == "rollback":
            return "rollback"
        protected = policy is None or policy.is_protected(payload.get("alias"))
        return "register" if via == "register" and not protected else "promote"
    if action in ("rollback.intent", "rollback.done"):
        return "rollback"
    if action == "model.labels":
        return "label"
    if action in ("model.freeze", "model.unfreeze"):
        return "freeze"
    if action.startswith("serve.client-"):  # issuing or withdrawing serving credentials
        return "serve-clients"
    return None


def actor_label(key_id: str | None, display_name: str) -> str:
    """The audit actor: the acting key's id; ``ASSAY_ACTOR`` is only a display name."""
    if key_id is None:
        return f"unsigned ({display_name})"
    return f"key:{key_id[:16]} ({display_name})"


def sign_change(
    key: SigningKey,
    *,
    action: str,
    subject: str,
    payload: dict[str, Any],
    digest: str | None,
    display_name: str,
    at: datetime,
) -> tuple[str, str]:
    """(envelope, digest) of a change statement signed by ``key``."""
    predicate = {
        "action": action,
        "subject": subject,
        "payload": payload,
        "at": iso_utc(at),
        "actor": display_name,
    }
    digest = digest or digest_of(predicate)
    envelope = sign_statement(
        key, predicate_type=PREDICATE_TYPE, subject=subject, digest=digest, predicate=predicate
    )
    return envelope, digest


@dataclass(frozen=True)
class SignedChange:
    """A verified change statement."""

    action: str
    subject: str
    payload: dict[str, Any]
    at: datetime
    key_id: str
    digest: str


def _verified(text: str, trust: TrustList) -> SignedChange | None:
    """The change in ``text`` if a trusted key signed it before its cutoff, else None."""
    try:
        statement = open_statement(text, PREDICATE_TYPE, what="signed change")
        predicate = statement.predicate
        at = parse_iso_utc(predicate["at"])
        action, payload = predicate["action"], predicate["payload"]
    except (IntegrityError, FormatError, KeyError, TypeError):
        return None
    if not isinstance(payload, dict) or predicate.get("subject") != statement.subject:
        return None
    for key_id in statement.key_ids:
        entry = trust.get(key_id)
        if entry is None or signature_time_problem(entry.record(), at):
            continue
        if statement_signed_by(statement, entry.public_key):
            return SignedChange(
                str(action), statement.subject, payload, at, key_id, statement.digest
            )
    return None


def signed_state(
    envelopes: Iterable[str], trust: TrustList, *, subject: str, manifest_root: str | None
) -> SignedChange | None:
    """The newest verifying state statement of ``subject`` over ``manifest_root``, or None."""
    best: SignedChange | None = None
    for text in envelopes:
        change = _verified(text, trust)
        if change is None or change.action not in STATE_ACTIONS or change.subject != subject:
            continue
        if manifest_root is not None and change.digest != manifest_root:
            continue
        if best is None or change.at > best.at:
            best = change
    return best


def signed_changes(
    envelopes: Iterable[str],
    trust: TrustList,
    *,
    subject_prefix: str,
    memo: dict[bytes, SignedChange | None] | None = None,
) -> list[SignedChange]:
    """The verifying change statements whose subject starts with ``subject_prefix``, oldest
    first (what ``assay serve``'s client table is evaluated from).

    ``memo``: verification results by SHA-256 of the envelope, valid for this ``trust`` only
    (the result depends on the envelope and the trust list alone); it is pruned to the
    envelopes seen in this call, so it stays as large as the statements are.
    """
    import hashlib

    changes, seen = [], {}
    for text in envelopes:
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        change = memo[key] if memo is not None and key in memo else _verified(text, trust)
        seen[key] = change
        if change is not None and change.subject.startswith(subject_prefix):
            changes.append(change)
    if memo is not None:
        memo.clear()
        memo.update(seen)
    return sorted(changes, key=lambda c: c.at)


def role_holds(change: SignedChange, trust: TrustList, policy: Policy, action: str) -> bool:
    """Whether the key that signed ``change`` holds the role ``policy`` names for ``action``."""
    entry = trust.get(change.key_id)
    return entry is not None and entry.has_role(policy.role_for(action))

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

Deleting the newest statement would leave an older one "newest", so the decision also compares
it with the newest state event of the audit log (hash-linked, checkpointed outside the store;
:func:`audit_disagreement`). A statement signed since then names its audit event (``seq``, the
leaf index), so it must be *that* event: a deleted newer statement, or an event appended behind
assay's back, is a disagreement. Statements signed before ``seq`` existed are compared by the
state they set.

The signing-time rule for a revoked key (``--compromised-since``) is checked at the latest of
the statement's own ``at``, the time the store recorded it and the version's registration: a
statement cannot predate the version it is about, whatever ``at`` it claims.

:func:`signed_changes` gives the verifying statements of a family of subjects (the API clients of
``assay serve``, ``serve-client:NAME``), from which the server's credential table is evaluated.
"""

from __future__ import annotations

import json
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
    "StateEvent",
    "actor_label",
    "audit_disagreement",
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
    seq: int | None = None,
) -> tuple[str, str]:
    """(envelope, digest) of a change statement signed by ``key``; ``seq`` is the index of the
    audit event recorded with it."""
    predicate: dict[str, Any] = {
        "action": action,
        "subject": subject,
        "payload": payload,
        "at": iso_utc(at),
        "actor": display_name,
    }
    if seq is not None:
        predicate["seq"] = seq
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
    #: The index of the audit event recorded with it (None: signed before statements named it).
    seq: int | None = None


@dataclass(frozen=True)
class StateEvent:
    """The newest state event of a subject in the audit log: its index and the state it set."""

    seq: int
    to: str | None

    @classmethod
    def from_row(cls, seq: int, payload_text: str) -> StateEvent:
        """From an ``audit_events`` row; an unreadable payload sets no state (a disagreement)."""
        try:
            to = json.loads(payload_text).get("to")
        except (ValueError, TypeError, AttributeError):
            to = None
        return cls(int(seq), to if isinstance(to, str) else None)


def _verified(
    text: str, trust: TrustList, recorded_at: datetime | None, not_before: datetime | None
) -> SignedChange | None:
    """The change in ``text`` if a trusted key signed it before its cutoff, else None.

    The cutoff is compared with the latest of ``at`` (signer-chosen), ``recorded_at`` (the
    store's time) and ``not_before`` (the subject's registration), so a compromised key cannot
    backdate a statement about a version registered after it was compromised.
    """
    try:
        statement = open_statement(text, PREDICATE_TYPE, what="signed change")
        predicate = statement.predicate
        at = parse_iso_utc(predicate["at"])
        action, payload = predicate["action"], predicate["payload"]
        seq = predicate.get("seq")
    except (IntegrityError, FormatError, KeyError, TypeError):
        return None
    if not isinstance(payload, dict) or predicate.get("subject") != statement.subject:
        return None
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 0):
        return None
    when = max(t for t in (at, recorded_at, not_before) if t is not None)
    for key_id in statement.key_ids:
        entry = trust.get(key_id)
        if entry is None or signature_time_problem(entry.record(), when):
            continue
        if statement_signed_by(statement, entry.public_key):
            return SignedChange(
                str(action), statement.subject, payload, at, key_id, statement.digest, seq
            )
    return None


def signed_state(
    envelopes: Iterable[tuple[str, datetime | None]],
    trust: TrustList,
    *,
    subject: str,
    manifest_root: str | None,
    not_before: datetime | None = None,
) -> SignedChange | None:
    """The newest verifying state statement of ``subject`` over ``manifest_root``, or None.

    ``envelopes``: (envelope, recorded_at) pairs as the store keeps them; ``not_before``: the
    subject's registration time (see :func:`_verified`).
    """
    best: SignedChange | None = None
    for text, recorded_at in envelopes:
        change = _verified(text, trust, recorded_at, not_before)
        if change is None or change.action not in STATE_ACTIONS or change.subject != subject:
            continue
        if manifest_root is not None and change.digest != manifest_root:
            continue
        if best is None or change.at > best.at:
            best = change
    return best


def audit_disagreement(change: SignedChange | None, event: StateEvent | None) -> str | None:
    """Why the newest signed state ``change`` and the audit log's newest state ``event`` of a
    subject disagree (a statement deleted, or an event added, behind assay's back), or None."""
    signed = change.payload.get("to") if change else "registered"
    if event is None:
        if change is None:
            return None
        return f"its signed state {signed} has no state event in the audit log"
    if change is None:
        return (
            f"the audit log's state event {event.seq} set {event.to} but no signed state "
            "statement of it verifies"
        )
    if event.to != signed:
        return (
            f"the audit log's newest state event ({event.seq}) set {event.to} but its newest "
            f"signed state is {signed}"
        )
    if change.seq is not None and change.seq != event.seq:
        return (
            f"its newest signed state belongs to audit event {change.seq}, but the audit log's "
            f"newest state event is {event.seq}"
        )
    return None


def signed_changes(
    envelopes: Iterable[tuple[str, datetime | None]],
    trust: TrustList,
    *,
    subject_prefix: str,
    memo: dict[bytes, SignedChange | None] | None = None,
) -> list[SignedChange]:
    """The verifying change statements whose subject starts with ``subject_prefix``, oldest
    first (what ``assay serve``'s client table is evaluated from). ``envelopes``: (statement,
    the time the store recorded it), so a revoked key's cutoff is not judged by ``at`` alone.

    ``memo``: verification results by SHA-256 of the envelope, valid for this ``trust`` only
    (the result depends on the envelope and the trust list alone); it is pruned to the
    envelopes seen in this call, so it stays as large as the statements are.
    """
    import hashlib

    changes, seen = [], {}
    for text, recorded_at in envelopes:
        stamp = recorded_at.isoformat() if recorded_at else ""
        key = hashlib.sha256(f"{stamp}|{text}".encode("utf-8", "surrogatepass")).digest()
        if memo is not None and key in memo:
            change = memo[key]
        else:
            change = _verified(text, trust, recorded_at, None)
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

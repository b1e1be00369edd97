"""Property tests of the parsers behind trust: signed statements, trust lists, policies.

Every one of them reads what an attacker with database write access may have written (or, for
policy files, handed over): whatever the input, only assay's own errors come out, and a valid
document round-trips.
"""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from assay.core.errors import AssayError, ConfigError, FormatError, IntegrityError
from assay.integrity.keys import generate_key
from assay.trust.policy import ACTIONS, Policy, evaluate_policy, parse_policy_text
from assay.trust.statements import open_statement, sign_statement, statement_signed_by
from assay.trust.trust_list import TrustEntry, TrustList, evaluate_trust_list

KEY = generate_key("ecdsa-p256")
ROOT_ENTRY = TrustEntry(KEY.key_id, "root", KEY.key_type, KEY.public_key.pem, ("admin",))
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _envelope(payload: object) -> str:
    raw = json.dumps(payload).encode()
    return json.dumps(
        {
            "payloadType": "application/vnd.in-toto+json",
            "payload": base64.b64encode(raw).decode(),
            "signatures": [{"keyid": KEY.key_id, "sig": base64.b64encode(b"x" * 64).decode()}],
        }
    )


@given(st.text(max_size=400))
def test_open_statement_on_any_text_raises_only_integrity_errors(text: str) -> None:
    with contextlib.suppress(IntegrityError):
        open_statement(text, "urn:assay:change:v1", what="statement")


@given(json_values)
def test_open_statement_on_any_payload_raises_only_integrity_errors(payload: object) -> None:
    with contextlib.suppress(IntegrityError):
        open_statement(_envelope(payload), "urn:assay:change:v1", what="statement")


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.text(max_size=30))
def test_signed_statements_round_trip(predicate: dict, subject: str) -> None:
    text = sign_statement(
        KEY,
        predicate_type="urn:assay:test:v1",
        subject=subject,
        digest="ab" * 32,
        predicate=predicate,
    )
    parsed = open_statement(text, "urn:assay:test:v1", what="statement")
    assert (parsed.subject, parsed.predicate) == (subject, predicate)
    assert statement_signed_by(parsed, KEY.public_key)


@given(st.lists(st.text(max_size=200) | json_values.map(_envelope), max_size=4))
def test_trust_list_evaluation_of_any_rows_raises_only_assay_errors(rows: list[str]) -> None:
    with contextlib.suppress(IntegrityError, ConfigError):
        evaluate_trust_list(rows, KEY.key_id)


@given(st.integers(min_value=1, max_value=5))
def test_a_valid_chain_evaluates_and_any_reordering_too(length: int) -> None:
    current = TrustList(1, {KEY.key_id: ROOT_ENTRY}, KEY.key_id)
    rows = [current.sign(KEY, NOW)]
    for _ in range(length - 1):
        other = generate_key("ecdsa-p256")
        entry = TrustEntry(other.key_id, "k", other.key_type, other.public_key.pem, ("signer",))
        current = current.with_entry(entry)
        rows.append(current.sign(KEY, NOW))
    result = evaluate_trust_list(list(reversed(rows)), KEY.key_id)
    assert result.serial == length and set(result.entries) == set(current.entries)


@given(st.text(max_size=300))
def test_policy_text_raises_only_format_errors(text: str) -> None:
    with contextlib.suppress(FormatError):
        parse_policy_text(text)


@given(
    st.sampled_from(["enforce", "warn", "off"]),
    st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), min_size=1, max_size=3),
    st.booleans(),
    st.dictionaries(
        st.sampled_from(sorted(ACTIONS)),
        st.sampled_from(["admin", "signer", "approver", "responder"]),
    ),
)
def test_policy_documents_round_trip(mode, aliases, allow, roles) -> None:
    doc = {
        "enforcement": mode,
        "protected_aliases": aliases,
        "allow_unmanaged": allow,
        "roles": roles,
    }
    policy = parse_policy_text(json.dumps(doc))
    assert policy.enforcement == mode and policy.allow_unmanaged is allow
    assert policy.protected_aliases == tuple(dict.fromkeys(aliases))
    assert all(policy.role_for(a) == r for a, r in roles.items())
    assert parse_policy_text(json.dumps(policy.document())) == Policy(**{**policy.__dict__})


@given(st.lists(st.text(max_size=200) | json_values.map(_envelope), min_size=1, max_size=3))
def test_policy_evaluation_of_any_rows_raises_only_integrity_errors(rows: list[str]) -> None:
    trust = TrustList(1, {KEY.key_id: ROOT_ENTRY}, KEY.key_id)
    try:
        evaluate_policy(rows, trust)
    except IntegrityError:
        pass
    except AssayError as exc:  # pragma: no cover - would be a bug: report it clearly
        raise AssertionError(f"unexpected {type(exc).__name__}: {exc}") from exc

"""The policy's ``serving:`` section (trust/serving_policy.py): strict parsing, property-based."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.core.errors import FormatError
from assay.trust.policy import parse_policy_text, policy_from_document
from assay.trust.serving_policy import DEFAULT_SERVING, parse_serving

names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12)
limits = st.fixed_dictionaries(
    {},
    optional={
        "rate_per_second": st.floats(0.001, 1e6),
        "burst": st.integers(1, 10**7),
        "daily_quota": st.integers(1, 10**12),
    },
)
sections = st.fixed_dictionaries(
    {},
    optional={
        "require_api_key": st.booleans(),
        "rate_per_second": st.floats(0.001, 1e6),
        "burst": st.integers(1, 10**7),
        "daily_quota": st.integers(1, 10**12),
        "max_body_bytes": st.integers(64, 2**31),
        "max_rows": st.integers(1, 10**7),
        "request_timeout_s": st.floats(0.1, 3600),
        "sample_rate": st.floats(0.0, 1.0),
        "retention_days": st.integers(1, 36500),
        "exact_models": st.lists(names, max_size=5),
        "answer_marks": st.floats(0.0, 0.5),
        "answer_mark_bound": st.floats(0.0, 1.0),
        "extraction": st.fixed_dictionaries(
            {},
            optional={
                "threshold": st.floats(0.0, 1.0),
                "min_queries": st.integers(3, 5000),
                "window": st.integers(10, 100_000),
                "volume_per_day": st.integers(1, 10**12),
                "playbook": st.booleans(),
            },
        ),
        "clients": st.dictionaries(names, limits, max_size=4),
    },
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(sections)
@settings(max_examples=200, deadline=None)
def test_valid_sections_parse_and_round_trip(section: dict) -> None:
    policy = policy_from_document({"serving": section})
    # JSON, not YAML text: PyYAML reads 1e-3 (no dot) as a string, which the parser refuses
    again = policy_from_document(json.loads(json.dumps(policy.document())))
    assert again.serving == policy.serving
    for client, lim in section.get("clients", {}).items():
        assert policy.serving.limits_for(client).burst == lim.get("burst", policy.serving.burst)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_any_document_parses_or_raises_format_error(value: object) -> None:
    try:
        parse_serving(value)
    except FormatError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("policy: ")


@given(sections, names.filter(lambda n: n not in {"burst", "clients"}))
@settings(max_examples=100, deadline=None)
def test_unknown_keys_are_refused(section: dict, extra: str) -> None:
    from dataclasses import fields

    from assay.trust.serving_policy import ServingPolicy

    if extra in {f.name for f in fields(ServingPolicy)}:
        return
    with pytest.raises(FormatError, match="unknown key"):
        parse_serving({**section, extra: 1})


@pytest.mark.parametrize(
    "section",
    [
        {"burst": 0},
        {"burst": True},
        {"rate_per_second": "10"},
        {"sample_rate": 1.5},
        {"answer_marks": 0.9},
        {"answer_mark_bound": 1.5},
        {"answer_mark_bound": "0.1"},
        {"exact_models": "iris"},
        {"extraction": {"threshold": 2}},
        {"extraction": {"playbook": "yes"}},
        {"clients": {"a": {"burst": -1}}},
        {"clients": {"a": {"color": 1}}},
        {"clients": ["a"]},
    ],
)
def test_bad_values_are_refused(section: dict) -> None:
    with pytest.raises(FormatError):
        parse_serving(section)


def test_default_policy_document_has_no_serving_key() -> None:
    policy = parse_policy_text("enforcement: enforce")
    assert policy.serving == DEFAULT_SERVING and "serving" not in policy.document()

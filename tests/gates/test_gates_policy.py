"""The policy's gates: section: strict parsing (property tests) and per-model requirements."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.core.errors import FormatError
from assay.trust.policy import DEFAULT_POLICY, parse_policy_text, policy_from_document


def test_star_and_model_entries_merge_with_model_params_winning():
    policy = parse_policy_text(
        "gates:\n"
        "  '*': {pickle-scan: {}, robustness: {eps: 0.1}}\n"
        "  fraud: {robustness: {eps: 0.2, min_accuracy: 0.7}, privacy: {max_auc: 0.6}}\n"
    )
    assert policy.gates.for_model("fraud") == {
        "pickle-scan": {},
        "robustness": {"eps": 0.2, "min_accuracy": 0.7},
        "privacy": {"max_auc": 0.6},
    }
    assert policy.gates.for_model("other") == {"pickle-scan": {}, "robustness": {"eps": 0.1}}
    assert "gates" in policy.document()


def test_no_gates_keeps_the_document_as_before():
    assert "gates" not in DEFAULT_POLICY.document()
    assert DEFAULT_POLICY.gates.for_model("x") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gates: [a]", "gates must map model names"),
        ("gates: {m: {'Bad Name': {}}}", "is not a gate name"),
        ("gates: {m: {robustness: 3}}", "needs a mapping of parameters"),
        ("gates: {m: {robustness: {eps: {a: 1}}}}", "must be a number"),
        ("gates: {m: {robustness: {eps: .nan}}}", "finite number"),
    ],
)
def test_malformed_sections_are_one_line_format_errors(text, message):
    with pytest.raises(FormatError, match=message):
        parse_policy_text(text)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_section_parses_or_is_a_format_error(section):
    try:
        policy = policy_from_document({"gates": section})
    except FormatError as exc:
        assert "\n" not in str(exc)
        return
    for model in policy.gates.required:
        for params in policy.gates.for_model(model).values():
            assert isinstance(params, dict)

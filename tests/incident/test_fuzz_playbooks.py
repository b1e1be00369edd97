"""Property-based tests (hypothesis) of the playbook YAML loader and the template scanner and
evaluator: whatever the input, the only exceptions are assay's errors, the output is no bigger
than a small multiple of the input (no alias or template expansion), and nothing is written.

The example counts are small so that `make test` stays quick; ``HYPOTHESIS_PROFILE=fuzz`` (what
`make fuzz` sets) runs 5,000 per test, ``ASSAY_FUZZ_EXAMPLES=N`` any other number.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from assay.core.errors import AssayError
from assay.incident._templates import (
    MAX_EXPRESSION_CHARS,
    TemplateError,
    compile_condition,
    compile_template,
    split_template,
)
from assay.incident.actions import SPECS
from assay.incident.playbook import Playbook, parse_playbook
from assay.testing.fakes import fake_actions

FUZZ = settings(
    max_examples=int(
        os.environ.get("ASSAY_FUZZ_EXAMPLES")
        or (5000 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 150)
    ),
    deadline=None,  # bounded work is asserted by size, never by time
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # tmp_path: compared before and after each example
    ],
)

ACTIONS = fake_actions()

# --- strategies --------------------------------------------------------------------------------

NAMES = st.sampled_from(
    ["inputs", "steps", "item", "incident", "true", "false", "null", "none", "x", "_x", "__class__"]
)
FIELDS = st.sampled_from(["a", "b", "dataset", "outputs", "radius", "models", "_private", "0"])
LITERALS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=8).map(repr),
    st.sampled_from(["1e999", "-1", "b'x'", "...", "1j"]),
)


def _compose(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, FIELDS).map(lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(children, st.one_of(LITERALS, children)).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.lists(children, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(children, min_size=1, max_size=3).map(lambda xs: "(" + ", ".join(xs) + ",)"),
        children.map(lambda c: f"not {c}"),
        children.map(lambda c: f"-{c}"),
        st.tuples(children, st.sampled_from(["and", "or"]), children).map(" ".join),
        st.tuples(
            children,
            st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is", "+", "**"]),
            children,
        ).map(" ".join),
        st.tuples(
            children,
            st.sampled_from(["length", "default", "join", "upper", "length > 0"]),
            st.one_of(st.just(""), children.map(lambda c: f"({c})")),
        ).map(lambda t: f"{t[0]} | {t[1]}{t[2]}"),
        children.map(lambda c: f"f({c})"),
        children.map(lambda c: f"({c})"),
    )


EXPRESSIONS = st.recursive(st.one_of(NAMES, LITERALS), _compose, max_leaves=12)
JUNK = st.text(alphabet=st.sampled_from(list("{}|()[]'\"\\ .:,!<>=-\n\t\x00aZ_0é")), max_size=40)
TEMPLATES = st.lists(
    st.one_of(EXPRESSIONS.map(lambda e: "{{ " + e + " }}"), JUNK, st.sampled_from(["{{", "}}"])),
    max_size=6,
).map("".join)

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6)),
    lambda c: st.one_of(
        st.lists(c, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), c, max_size=3),
    ),
    max_leaves=10,
)
CONTEXTS = st.fixed_dictionaries(
    {
        "inputs": st.dictionaries(FIELDS, JSON_VALUES, max_size=3),
        "steps": st.dictionaries(
            FIELDS, st.fixed_dictionaries({"status": st.text(max_size=5), "outputs": JSON_VALUES})
        ),
        "item": JSON_VALUES,
        "incident": st.fixed_dictionaries({"id": st.text(max_size=5)}),
    }
)

# YAML: real playbook shapes with hostile values, and token soup with anchors, aliases, tags and
# flow brackets (what billion-laughs and deep-nesting inputs are made of).
STEP = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["a", "b", "c", "1bad"]),
        "action": st.sampled_from([*sorted(SPECS), "no.such"]),
    },
    optional={
        "with": st.dictionaries(st.sampled_from(["message", "source", "x"]), TEMPLATES, max_size=3),
        "when": st.one_of(EXPRESSIONS, TEMPLATES, st.booleans()),
        "foreach": st.one_of(TEMPLATES, st.lists(JSON_VALUES, max_size=3)),
        "approval": st.one_of(st.booleans(), TEMPLATES),
        "on_failure": st.sampled_from(["halt", "continue", "later"]),
    },
)
PLAYBOOK_DOCS = st.fixed_dictionaries(
    {"id": st.sampled_from(["demo", "Bad Id"]), "steps": st.lists(STEP, max_size=4)},
    optional={
        "severity": st.sampled_from(["low", "high", "urgent"]),
        "threats": st.lists(st.sampled_from(["AML.T0020", "ML02:2023", "T1"]), max_size=2),
        "inputs": st.dictionaries(
            st.sampled_from(["dataset", "reason", "bad name"]),
            st.fixed_dictionaries({}, optional={"type": st.sampled_from(["dataset", "blob"])}),
            max_size=2,
        ),
    },
).map(lambda doc: yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
YAML_TOKENS = st.sampled_from(
    [
        "&a ",
        "*a",
        "&b [*a, *a, *a]",
        "<<: *a\n",
        "[",
        "]",
        "{",
        "}",
        ": ",
        "- ",
        "\n",
        "  ",
        "id: x\n",
        "steps:\n",
        "!!python/object:os.system ",
        "!!binary ",
        "!!set ",
        "? ",
        "9" * 5000,
        "2001-13-45",
        "'",
        '"',
        "{{ ",
        " }}",
        "not ",
        "\t",
        "%YAML 1.1\n",
        "---\n",
        "\x00",
        "\ufeff",
    ]
)
YAML_SOUP = st.lists(YAML_TOKENS, max_size=60).map("".join)


def _size(value: object) -> int:
    return len(json.dumps(value, default=str))


# --- template scanner and evaluator -----------------------------------------------------------


@FUZZ
@given(TEMPLATES)
def test_template_scanner_pieces_rebuild_the_text(text: str) -> None:
    try:
        pieces = split_template(text)
    except TemplateError:
        return
    assert "".join(("{{" + p + "}}") if is_expr else p for is_expr, p in pieces) == text
    assert all("{{" not in p for _, p in pieces)


@FUZZ
@given(TEMPLATES, CONTEXTS)
@example("x {{ inputs.a }}", {"inputs": {"a": {1: 2, "b": 3}}})  # keys of mixed types
@example("{{ inputs[[1]] }}", {"inputs": {"a": 1}})  # an unhashable key
def test_templates_compile_and_render_or_raise_assay_errors(text: str, ctx: dict) -> None:
    try:
        template = compile_template(text)
    except TemplateError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    template.refs  # noqa: B018 - walks every expression
    for partial in (False, True):
        try:
            out = template.render(ctx, partial=partial)
        except TemplateError as exc:
            assert "\n" not in str(exc)
            continue
        if not template.whole:
            assert isinstance(out, str)


@FUZZ
@given(st.one_of(EXPRESSIONS, JUNK, st.booleans()), CONTEXTS)
def test_conditions_evaluate_or_raise_assay_errors(when: object, ctx: dict) -> None:
    try:
        expr = compile_condition(when)
        if expr is not None:
            expr.evaluate(ctx)
    except TemplateError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(st.integers(1, 20_000), st.sampled_from(["not ", "-", "(", "[", "a.", "{{ "]))
def test_deep_or_long_expressions_are_refused_in_one_line(n: int, unit: str) -> None:
    text = "{{ " + unit * n + "x }}"
    try:
        compile_template(text).render({"inputs": {}})
    except TemplateError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 400
        if len(text) > MAX_EXPRESSION_CHARS + 10:
            assert "longer than" in message or "unclosed" in message


# --- playbook YAML loader ----------------------------------------------------------------------


def _check_parse(text: str, tmp: Path) -> None:
    before = sorted(tmp.rglob("*"))
    try:
        book = parse_playbook(text, "fuzz.yaml", ACTIONS)
    except AssayError as exc:
        assert str(exc).startswith("fuzz.yaml:"), str(exc)
        assert "\n" not in str(exc)
    else:
        assert isinstance(book, Playbook)
        # No expansion: what the playbook holds is no bigger than a multiple of its text.
        held = [s.params for s in book.steps] + [s.foreach for s in book.steps]
        assert _size(held) <= 8 * len(text) + 64
    assert sorted(tmp.rglob("*")) == before  # nothing written


@FUZZ
@given(PLAYBOOK_DOCS)
def test_generated_playbooks_parse_or_raise_assay_errors(tmp_path: Path, text: str) -> None:
    _check_parse(text, tmp_path)


@FUZZ
@given(YAML_SOUP)
def test_yaml_token_soup_parses_or_raises_assay_errors(tmp_path: Path, text: str) -> None:
    _check_parse(text, tmp_path)


@FUZZ
@given(st.text(max_size=300))
def test_any_text_parses_or_raises_assay_errors(tmp_path: Path, text: str) -> None:
    _check_parse(text, tmp_path)


@FUZZ
@given(st.integers(2, 40), st.integers(2, 12))
def test_alias_expansion_is_refused_whatever_its_shape(tmp_path: Path, levels: int, fan: int):
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    text = "\n".join(lines) + "\nid: x\nsteps: [{id: s, action: notify, with: {message: *a1}}]\n"
    _check_parse(text, tmp_path)

"""Templates and `when` expressions: types kept, closed language, clear missing-value errors."""

from __future__ import annotations

import pytest

from assay.incident._templates import (
    MissingValueError,
    TemplateError,
    compile_condition,
    compile_template,
    evaluate_condition,
    parse_expression,
    render_value,
    value_refs,
)

CTX = {
    "inputs": {"dataset": "customers@3", "webhook": None, "n": 3, "names": ["a", "b"]},
    "steps": {
        "radius": {
            "status": "succeeded",
            "outputs": {"models": ["churn", "fraud"], "aliases": [{"model": "churn"}]},
        }
    },
    "item": {"name": "churn", "alias": "production"},
    "incident": {"id": "inc-1", "playbook": "data-poisoning", "severity": "high"},
}


def test_whole_string_template_keeps_type():
    assert compile_template("{{ steps.radius.outputs.models }}").render(CTX) == ["churn", "fraud"]
    assert compile_template("  {{ inputs.n }} ").render(CTX) == 3
    assert compile_template("{{ inputs.webhook }}").render(CTX) is None


def test_embedded_template_renders_text():
    t = compile_template("{{ item.name }}@{{ item.alias }} in {{ incident.id }}")
    assert t.render(CTX) == "churn@production in inc-1"
    assert compile_template("x={{ steps.radius.outputs.models }}").render(CTX) == "x=churn, fraud"


def test_render_value_walks_structures():
    value = {"a": ["{{ inputs.dataset }}", 1], "b": {"c": "{{ item['name'] }}"}}
    assert render_value(value, CTX) == {"a": ["customers@3", 1], "b": {"c": "churn"}}


def test_filters():
    assert parse_expression("steps.radius.outputs.models | length").evaluate(CTX) == 2
    assert parse_expression("inputs.names | join('; ')").evaluate(CTX) == "a; b"
    assert parse_expression("inputs.nothing | default('x')").evaluate(CTX) == "x"
    assert parse_expression("inputs.webhook | default([]) | length").evaluate(CTX) == 0
    assert parse_expression("steps.radius.outputs.models | length > 1").evaluate(CTX) is True
    assert parse_expression("inputs.names | join(',')").evaluate(CTX) == "a,b"


def test_conditions():
    assert evaluate_condition("inputs.webhook or inputs.n > 2", CTX) is True
    assert evaluate_condition("not inputs.webhook and 'churn' in steps.radius.outputs.models", CTX)
    assert evaluate_condition("{{ inputs.n == 3 }}", CTX) is True
    assert evaluate_condition(False, CTX) is False
    assert evaluate_condition(None, CTX) is True
    assert evaluate_condition("inputs.n != -1 and true", CTX) is True
    assert evaluate_condition("steps.radius.status == 'succeeded'", CTX)


def test_missing_value_names_the_reference():
    with pytest.raises(MissingValueError, match=r"'steps\.radius\.outputs\.versions' is not set"):
        compile_template("{{ steps.radius.outputs.versions }}").render(CTX)
    with pytest.raises(MissingValueError, match=r"'inputs\.webhook' is null"):
        parse_expression("inputs.webhook.url").evaluate(CTX)
    with pytest.raises(MissingValueError, match="'item'"):
        parse_expression("item.name").evaluate({"inputs": {}})


def test_partial_rendering_keeps_unknown_parts():
    ctx = {"inputs": {"dataset": "d@1"}, "steps": {}}
    assert render_value("{{ steps.x.outputs.y }}", ctx, partial=True) == "{{ steps.x.outputs.y }}"
    assert (
        render_value("on {{ inputs.dataset }}: {{ steps.x.outputs.y }}", ctx, partial=True)
        == "on d@1: {{ steps.x.outputs.y }}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('id')",
        "inputs.__class__",
        "inputs['__class__']",
        "inputs.x()",
        "[x for x in inputs]",
        "lambda: 1",
        "inputs.n + 1",
        "open",
        "inputs.names[0:1]",
        "{'a': 1}",
        "inputs.x | upper",
        "inputs.x | length(1)",
        "inputs.x if inputs.y else 1",
        "~inputs.n",
        "(inputs.x | length)",
        "",
        "inputs.x ==",
    ],
)
def test_refuses_everything_outside_the_language(text):
    with pytest.raises(TemplateError):
        parse_expression(text)


def test_template_syntax_errors():
    with pytest.raises(TemplateError, match="unclosed"):
        compile_template("{{ inputs.x ")
    with pytest.raises(TemplateError):
        compile_template("{{ }}")
    with pytest.raises(TemplateError):
        compile_condition("{{ inputs.a }} and {{ inputs.b }}")


def test_refs():
    refs = value_refs({"a": "{{ steps.radius.outputs.models | default(inputs.fallback) }}"})
    assert ("steps", "radius", "outputs", "models") in refs
    assert ("inputs", "fallback") in refs
    assert value_refs("{{ item.name }} {{ incident.id }}") == [("item", "name"), ("incident", "id")]
    assert value_refs(["plain", 1]) == []

"""Playbook schema: everything refused before anything runs, with file:line: step 'id': ..."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from assay.core.errors import FormatError, NotFoundError
from assay.incident.playbook import (
    InputError,
    PlaybookError,
    builtin_playbooks,
    load_playbook,
    parse_playbook,
    resolve_inputs,
    validate,
)
from assay.testing.fakes import fake_actions

GOOD = """\
id: demo
description: a demo
severity: high
threats: [AML.T0020, ML02:2023, AML.T0010.002]
inputs:
  dataset: {type: dataset, description: poisoned dataset}
  when_from: {type: datetime, required: false}
  tags: {type: list, default: "a,b"}
steps:
  - id: radius
    action: lineage.blast_radius
    with:
      source: "dataset:{{ inputs.dataset }}"
  - id: rollback
    action: registry.rollback
    foreach: "{{ steps.radius.outputs.aliases }}"
    when: steps.radius.outputs.aliases | length > 0
    on_failure: continue
    approval: "Move {{ inputs.dataset }}?"
    with:
      model: "{{ item.model }}"
"""


def errors_of(text: str, actions=None) -> list[str]:
    with pytest.raises(PlaybookError) as info:
        parse_playbook(textwrap.dedent(text), "pb.yaml", actions or fake_actions())
    assert isinstance(info.value, FormatError)
    return info.value.errors


def test_good_playbook_parses():
    pb = parse_playbook(GOOD, "demo.yaml", fake_actions())
    assert pb.id == "demo" and pb.severity == "high"
    assert [s.id for s in pb.steps] == ["radius", "rollback"]
    step = pb.steps[1]
    assert step.on_failure == "continue" and step.approval == "Move {{ inputs.dataset }}?"
    assert step.line == 14 and step.line_of("action") == 15
    assert pb.digest.startswith("sha256:") and len(pb.digest) == 71
    assert pb.inputs["dataset"].required and not pb.inputs["when_from"].required


def test_unknown_action_names_file_line_step_and_suggests():
    errs = errors_of(GOOD.replace("registry.rollback", "registry.rolback"))
    assert errs == [
        "pb.yaml:15: step 'rollback': unknown action 'registry.rolback'"
        " (did you mean 'registry.rollback'?)"
    ]


def test_collects_every_problem():
    text = GOOD.replace("severity: high", "severity: urgent").replace(
        "threats: [AML.T0020,", "threats: [AML.T20, ML11:2023,"
    )
    text = text.replace("    on_failure: continue\n", "    on_failure: maybe\n    retries: 3\n")
    errs = errors_of(text)
    joined = "\n".join(errs)
    assert "pb.yaml:3: 'severity' must be one of low, medium, high, critical" in joined
    assert "invalid threat id 'AML.T20'" in joined
    assert "invalid threat id 'ML11:2023'" in joined
    assert "pb.yaml:18: step 'rollback': on_failure must be 'halt' or 'continue'" in joined
    assert "pb.yaml:19: step 'rollback': unknown key 'retries'" in joined
    with pytest.raises(PlaybookError) as info:
        parse_playbook(text, "pb.yaml")
    assert "more problem(s)" in str(info.value) and "\n" not in str(info.value)
    assert info.value.details().count("\n") == len(info.value.errors) - 1


def test_missing_and_unknown_params():
    errs = errors_of(GOOD.replace('      model: "{{ item.model }}"', "      modle: x"))
    assert any(
        "step 'rollback': action 'registry.rollback' needs parameter(s): model" in e for e in errs
    )
    assert any("takes no parameter 'modle' (did you mean 'model'?)" in e for e in errs)


def test_undeclared_input_and_unknown_step():
    errs = errors_of(GOOD.replace('inputs.dataset }}"', 'inputs.datset }}"', 1))
    assert errs == [
        "pb.yaml:13: step 'radius': 'inputs.datset' refers to undeclared input 'datset'"
        " (did you mean 'dataset'?)"
    ]
    errs = errors_of(
        GOOD.replace("steps.radius.outputs.aliases }}", "steps.radios.outputs.aliases }}")
    )
    assert "refers to unknown step 'radios' (did you mean 'radius'?)" in errs[0]


def test_later_step_and_cycles():
    text = GOOD.replace(
        'source: "dataset:{{ inputs.dataset }}"', 'source: "{{ steps.rollback.outputs.x }}"'
    )
    errs = errors_of(text)
    assert any("dependency cycle: radius -> rollback -> radius" in e for e in errs)
    later = """\
    id: demo
    severity: low
    steps:
      - id: a
        action: registry.freeze
        with: {models: "{{ steps.b.outputs.models }}"}
      - id: b
        action: lineage.blast_radius
        with: {source: x}
    """
    errs = errors_of(later)
    assert errs == [
        "pb.yaml:6: step 'a': refers to step 'b', which runs later (steps run in order)"
    ]
    selfref = later.replace("steps.b.outputs", "steps.a.outputs")
    assert "cannot use its own outputs" in errors_of(selfref)[0]


def test_duplicate_ids_keys_and_bad_ids():
    text = GOOD + "  - id: radius\n    action: notify\n    with: {message: hi}\n"
    errs = errors_of(text)
    assert errs == ["pb.yaml:22: step 'radius': duplicate step id (first at line 10)"]
    errs = errors_of(GOOD.replace("  - id: radius\n", "  - id: blast-radius\n"))
    assert any("step id must be letters, digits and _" in e for e in errs)
    errs = errors_of(GOOD.replace("severity: high\n", "severity: high\nseverity: low\n"))
    assert any("duplicate key 'severity'" in e for e in errs)


def test_item_only_in_foreach_and_template_syntax():
    errs = errors_of(
        GOOD.replace('source: "dataset:{{ inputs.dataset }}"', 'source: "{{ item.x }}"')
    )
    assert "'item.x': 'item' exists only in steps with foreach" in errs[0]
    errs = errors_of(GOOD.replace("{{ item.model }}", "{{ item.model() }}"))
    assert "step 'rollback': template:" in errs[0] and "function call" in errs[0]
    errs = errors_of(GOOD.replace("| length > 0", "| upper"))
    assert "unknown filter 'upper'" in errs[0]


def test_yaml_syntax_and_shape_errors():
    with pytest.raises(PlaybookError, match=r"^pb.yaml:3: YAML"):
        parse_playbook("id: x\nsteps: [\n", "pb.yaml")
    with pytest.raises(PlaybookError, match="a playbook is a YAML mapping"):
        parse_playbook("- a\n- b\n", "pb.yaml")
    with pytest.raises(PlaybookError, match="YAML"):
        parse_playbook("id: !!python/object/apply:os.system [id]\n", "pb.yaml")
    errs = errors_of("id: x\nseverity: low\nsteps: []\n")
    assert errs == ["pb.yaml:3: 'steps' must be a non-empty list"]


def test_validate_against_a_registry_without_the_action():
    pb = parse_playbook(GOOD, "demo.yaml")  # no actions: schema and references only
    validate(pb, fake_actions())
    from assay.incident.actions import ActionRegistry

    with pytest.raises(PlaybookError, match="unknown action 'lineage.blast_radius'"):
        validate(pb, ActionRegistry())


def test_load_from_path_and_builtin(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    assert load_playbook(path, fake_actions()).id == "demo"
    assert load_playbook(str(path)).source == str(path)
    assert "data-poisoning" in builtin_playbooks()
    assert load_playbook("data-poisoning").source == "data-poisoning.yaml"
    with pytest.raises(NotFoundError, match="not a file nor a built-in"):
        load_playbook("no-such-playbook")
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("registry.rollback", "registry.rolback"))
    with pytest.raises(PlaybookError, match=rf"^{bad}:15: step 'rollback': unknown action"):
        load_playbook(bad, fake_actions())


def test_resolve_inputs():
    pb = parse_playbook(GOOD, "demo.yaml")
    out = resolve_inputs(pb, {"dataset": "customers@3", "when_from": "2024-05-01T03:00:00"})
    assert out == {
        "dataset": "customers@3",
        "when_from": "2024-05-01T03:00:00+00:00",
        "tags": ["a", "b"],
    }
    with pytest.raises(
        InputError,
        match=r"needs input\(s\): dataset \(poisoned dataset\); pass --set dataset=\.\.\.",
    ):
        resolve_inputs(pb, {})
    with pytest.raises(InputError, match="has no input"):
        resolve_inputs(pb, {"dataset": "d@1", "datset": "x"})
    with pytest.raises(InputError, match="NAME@V"):
        resolve_inputs(pb, {"dataset": "customers"})
    with pytest.raises(InputError, match="ISO 8601"):
        resolve_inputs(pb, {"dataset": "d@1", "when_from": "yesterday"})
    assert (
        resolve_inputs(pb, {"dataset": "d@1", "when_from": "2024-05-01T03:00:00Z"})["when_from"]
        == "2024-05-01T03:00:00+00:00"
    )


def test_playbook_files_are_read_bounded_and_only_when_regular(tmp_path: Path):
    import os

    from assay.incident.playbook import MAX_PLAYBOOK_BYTES, read_playbook_file

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # nobody writes: an unbounded open()/read() would hang here
    with pytest.raises(FormatError, match="not a regular file"):
        read_playbook_file(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        read_playbook_file("/dev/zero")
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "#" * MAX_PLAYBOOK_BYTES)
    with pytest.raises(FormatError, match="larger than"):
        load_playbook(big)
    with pytest.raises(PlaybookError, match="at most"):
        parse_playbook(GOOD + "#" * MAX_PLAYBOOK_BYTES)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(GOOD.encode() + b"# caf\xe9\n")
    with pytest.raises(FormatError, match="not UTF-8"):
        load_playbook(latin)
    ok = tmp_path / "ok.yaml"
    ok.write_text(GOOD)
    assert load_playbook(ok).id == "demo"


def test_many_problems_are_listed_up_to_a_bound():
    from assay.incident.playbook import MAX_ERRORS

    text = GOOD + "".join(f"unknown_{i}: x\n" for i in range(500))
    with pytest.raises(PlaybookError) as info:
        parse_playbook(text, "many.yaml")
    assert len(info.value.errors) == MAX_ERRORS + 1
    assert "not listed" in info.value.errors[-1]


def test_spec_actions_cover_every_spec_and_validate_builtin_playbooks():
    from assay.incident.actions import SPECS, spec_actions
    from assay.incident.service import playbook_source

    actions = spec_actions()
    assert actions.names() == sorted(SPECS)
    for name in ("data-poisoning", "model-extraction"):
        text, label = playbook_source(name)
        assert parse_playbook(text, label, actions).id == name

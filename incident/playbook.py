"""Playbooks: YAML incident procedures, loaded with line numbers and validated before anything runs.

A playbook::

    id: data-poisoning
    description: ...
    severity: high                      # low | medium | high | critical
    threats: [AML.T0020, ML02:2023]     # MITRE ATLAS technique ids, OWASP ML Top 10 (2023) ids
    inputs:
      dataset: {type: dataset, description: "poisoned dataset version NAME@V"}
      webhook: {type: string, required: false}
    steps:
      - id: radius                      # letters, digits, _ : referenced as steps.radius
        action: lineage.blast_radius    # a name from the action registry
        with: {source: "dataset:{{ inputs.dataset }}"}
        foreach: "{{ ... }}"            # optional: run once per item, as {{ item }}
        when: "inputs.webhook"          # optional expression; false -> skipped
        on_failure: halt                # halt (default) | continue
        approval: "Roll back production?"   # optional human gate before the step
        description: ...

``validate`` refuses, with ``file:line: step 'id': problem`` for each: unknown keys, unknown actions,
missing or unknown action parameters, bad template syntax, references to undeclared inputs or to
unknown or later steps, dependency cycles, duplicate step ids and malformed threat ids.

Playbooks may come from anyone, so loading is bounded: at most ``MAX_PLAYBOOK_BYTES`` of text, read
only from a regular file; YAML anchors and aliases are refused (an alias can make a few hundred
bytes expand to gigabytes: "billion laughs"); the YAML tree is at most ``MAX_YAML_DEPTH`` deep and
``MAX_YAML_NODES`` nodes; error messages quote at most a few dozen characters and list at most
``MAX_ERRORS`` problems.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from assay.core.errors import AssayError, FormatError, NotFoundError
from assay.incident._templates import (
    TemplateError,
    clip,
    compile_condition,
    compile_template,
    is_template,
    ref_to_str,
    value_refs,
)

__all__ = [
    "INPUT_TYPES",
    "MAX_PLAYBOOK_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "SEVERITIES",
    "THREATS",
    "InputError",
    "InputSpec",
    "Playbook",
    "PlaybookError",
    "Step",
    "builtin_playbooks",
    "load_playbook",
    "parse_playbook",
    "read_playbook_file",
    "resolve_inputs",
    "threat_name",
    "validate",
]

#: Limits on a playbook's text and YAML tree (the built-in playbooks are a few KB, depth < 10).
MAX_PLAYBOOK_BYTES = 256 * 1024
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 50_000
MAX_ERRORS = 100

SEVERITIES = ("low", "medium", "high", "critical")
INPUT_TYPES = ("string", "model", "dataset", "path", "datetime", "list")
ON_FAILURE = ("halt", "continue")
TOP_KEYS = frozenset({"id", "description", "severity", "threats", "inputs", "steps"})
INPUT_KEYS = frozenset({"description", "required", "default", "type"})
STEP_KEYS = frozenset(
    {"id", "action", "with", "foreach", "when", "on_failure", "approval", "description"}
)
INCIDENT_FIELDS = frozenset({"id", "playbook", "severity"})

# Names of the threat ids the built-in playbooks cite (MITRE ATLAS techniques, OWASP ML Top 10 2023).
THREATS: dict[str, str] = {
    "AML.T0010": "AI Supply Chain Compromise",
    "AML.T0010.002": "AI Supply Chain Compromise: Data",
    "AML.T0010.003": "AI Supply Chain Compromise: Model",
    "AML.T0015": "Evade AI Model",
    "AML.T0018": "Manipulate AI Model (formerly Backdoor ML Model)",
    "AML.T0018.000": "Manipulate AI Model: Poison AI Model",
    "AML.T0019": "Publish Poisoned Datasets",
    "AML.T0020": "Poison Training Data",
    "AML.T0024": "Exfiltration via AI Inference API",
    "AML.T0025": "Exfiltration via Cyber Means",
    "AML.T0043": "Craft Adversarial Data",
    "AML.T0044": "Full AI Model Access",
    "AML.T0055": "Unsecured Credentials",
    "ML01:2023": "OWASP ML01: Input Manipulation Attack",
    "ML02:2023": "OWASP ML02: Data Poisoning Attack",
    "ML03:2023": "OWASP ML03: Model Inversion Attack",
    "ML04:2023": "OWASP ML04: Membership Inference Attack",
    "ML05:2023": "OWASP ML05: Model Theft",
    "ML06:2023": "OWASP ML06: AI Supply Chain Attacks",
    "ML07:2023": "OWASP ML07: Transfer Learning Attack",
    "ML08:2023": "OWASP ML08: Model Skewing",
    "ML09:2023": "OWASP ML09: Output Integrity Attack",
    "ML10:2023": "OWASP ML10: Model Poisoning",
}
_ATLAS_RE = re.compile(r"^AML\.T\d{4}(\.\d{3})?$")
_OWASP_RE = re.compile(r"^ML(0[1-9]|10):2023$")
_IDENT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PLAYBOOK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
_DATASET_RE = re.compile(rf"^{_NAME}@\d+$")
_MODEL_RE = re.compile(rf"^{_NAME}(/\d+|@{_NAME})?$")


def threat_name(threat_id: str) -> str:
    return THREATS.get(threat_id, "")


class PlaybookError(FormatError):
    """A playbook does not validate. ``errors`` holds every problem, one line each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors) or ["invalid playbook"]
        more = f" (and {len(self.errors) - 1} more problem(s))" if len(self.errors) > 1 else ""
        super().__init__(self.errors[0] + more)

    def details(self) -> str:
        return "\n".join(self.errors)


class InputError(AssayError):
    """The inputs given to a playbook are missing, unknown or malformed."""


# --------------------------------------------------------------------------- YAML with lines


class _Map(dict):
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]
    duplicates: list[tuple[Any, int]]


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases and bounds the depth and size of the tree."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(
                None,
                None,
                "anchors and aliases (&name, *name) are not allowed in playbooks",
                event.start_mark,
            )
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_YAML_NODES} YAML nodes", event.start_mark
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"YAML nested more than {MAX_YAML_DEPTH} deep", event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line = node.start_mark.line + 1
    out.key_lines, out.duplicates = {}, []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in out:
                out.duplicates.append((key, line))
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "unhashable key", key_node.start_mark
            ) from None
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str = "string"
    description: str = ""
    required: bool = True
    default: Any = None
    line: int = 0


@dataclass(frozen=True)
class Step:
    id: str
    action: str
    params: dict[str, Any] = field(default_factory=dict)  # the step's `with`
    foreach: Any = None
    when: Any = None
    on_failure: str = "halt"
    approval: str | None = None  # None: no gate; else the question to ask
    description: str = ""
    line: int = 0
    key_lines: dict[str, int] = field(default_factory=dict, compare=False)

    def line_of(self, key: str) -> int:
        """Line of a step key, or of a parameter as ``with.<name>`` (falls back to ``with``)."""
        if key in self.key_lines:
            return self.key_lines[key]
        if key.startswith("with."):
            return self.key_lines.get("with", self.line)
        return self.line


@dataclass(frozen=True)
class Playbook:
    id: str
    description: str
    severity: str
    threats: tuple[str, ...]
    inputs: dict[str, InputSpec]
    steps: tuple[Step, ...]
    source: str = "<playbook>"  # file name used in error messages
    digest: str = ""  # sha256 of the YAML text
    key_lines: dict[str, int] = field(default_factory=dict, compare=False)

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise NotFoundError(f"playbook '{self.id}' has no step '{step_id}'")


class _Errors(list):
    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def add(self, line: int, message: str, step: str | None = None) -> None:
        if len(self) == MAX_ERRORS:
            self.append(f"{self.source}: more problems not listed (at most {MAX_ERRORS} are)")
        if len(self) > MAX_ERRORS:
            return
        where = f"step '{clip(step, 40)}': " if step else ""
        self.append(f"{self.source}:{line}: {where}{clip(message, 300)}")


def _suggest(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(name)[:100], [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _unknown_keys(errs: _Errors, data: _Map, allowed: frozenset[str], what: str, step=None) -> None:
    for key in data:
        if key not in allowed:
            errs.add(
                data.key_lines.get(key, data.line),
                f"unknown key '{key}' in {what}{_suggest(key, allowed)}",
                step,
            )
    for key, line in data.duplicates:
        errs.add(line, f"duplicate key '{key}' in {what}", step)


# --------------------------------------------------------------------------- parsing


def parse_playbook(text: str, source: str = "<playbook>", actions: Any = None) -> Playbook:
    """Parse and validate playbook text; with ``actions`` also check actions and their params."""
    if len(text) > MAX_PLAYBOOK_BYTES:  # characters <= bytes: a cheap first bound
        raise PlaybookError([f"{source}:0: a playbook is at most {MAX_PLAYBOOK_BYTES} bytes"])
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise PlaybookError([f"{source}:0: a playbook is UTF-8 text"]) from exc
    if len(raw) > MAX_PLAYBOOK_BYTES:
        raise PlaybookError([f"{source}:0: a playbook is at most {MAX_PLAYBOOK_BYTES} bytes"])
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    errs = _Errors(source)
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise PlaybookError([f"{source}:{line}: YAML: {clip(exc.problem or exc, 200)}"]) from exc
    except yaml.YAMLError as exc:
        raise PlaybookError([f"{source}:0: YAML: {clip(exc, 200)}"]) from exc
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # a constructor on a hostile scalar: an int of 5000 digits, a 13th month...
        raise PlaybookError([f"{source}:0: YAML: {clip(exc, 200)}"]) from exc
    if not isinstance(data, _Map):
        raise PlaybookError([f"{source}:1: a playbook is a YAML mapping (id, steps, ...)"])
    _unknown_keys(errs, data, TOP_KEYS, "the playbook")

    def top_line(key: str) -> int:
        return data.key_lines.get(key, data.line)

    pb_id = data.get("id")
    if not isinstance(pb_id, str) or not _PLAYBOOK_ID_RE.match(pb_id):
        errs.add(top_line("id"), "'id' must be a lowercase name like 'data-poisoning'")
        pb_id = str(pb_id)
    severity = data.get("severity")
    if severity not in SEVERITIES:
        errs.add(top_line("severity"), f"'severity' must be one of {', '.join(SEVERITIES)}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        errs.add(top_line("description"), "'description' must be text")
        description = str(description)

    threats = data.get("threats") or []
    if not isinstance(threats, list):
        errs.add(top_line("threats"), "'threats' must be a list of ids")
        threats = []
    for threat in threats:
        if not isinstance(threat, str) or not (_ATLAS_RE.match(threat) or _OWASP_RE.match(threat)):
            errs.add(
                top_line("threats"),
                f"invalid threat id '{threat}' (MITRE ATLAS like AML.T0020 or AML.T0010.002, "
                "OWASP ML Top 10 like ML02:2023)",
            )

    inputs = _parse_inputs(errs, data.get("inputs"), top_line("inputs"))
    steps = _parse_steps(errs, data.get("steps"), top_line("steps"))
    pb = Playbook(
        id=pb_id,
        description=description,
        severity=str(severity),
        threats=tuple(str(t) for t in threats),
        inputs=inputs,
        steps=tuple(steps),
        source=source,
        digest=digest,
        key_lines=dict(data.key_lines),
    )
    errs.extend(_semantic_errors(pb, actions))
    if errs:
        raise PlaybookError(errs)
    return pb


def _parse_inputs(errs: _Errors, raw: Any, line: int) -> dict[str, InputSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, _Map):
        errs.add(line, "'inputs' must map input names to {type, description, required, default}")
        return {}
    for key, dup_line in raw.duplicates:
        errs.add(dup_line, f"duplicate input '{key}'")
    out: dict[str, InputSpec] = {}
    for name, spec in raw.items():
        nline = raw.key_lines.get(name, line)
        if not isinstance(name, str) or not _IDENT_RE.match(name):
            errs.add(nline, f"input name '{name}' must be letters, digits and _")
            continue
        if spec is None:
            spec = _Map()
            spec.line, spec.key_lines, spec.duplicates = nline, {}, []
        if not isinstance(spec, _Map):
            errs.add(nline, f"input '{name}' must be a mapping (type, description, ...)")
            continue
        _unknown_keys(errs, spec, INPUT_KEYS, f"input '{name}'")
        itype = spec.get("type", "string")
        if itype not in INPUT_TYPES:
            errs.add(
                spec.key_lines.get("type", nline),
                f"input '{name}': type must be one of {', '.join(INPUT_TYPES)}",
            )
            itype = "string"
        has_default = "default" in spec and spec["default"] is not None
        required = spec.get("required", not has_default)
        if not isinstance(required, bool):
            errs.add(spec.key_lines.get("required", nline), f"input '{name}': required: true|false")
            required = True
        if required and has_default:
            errs.add(nline, f"input '{name}' has a default, so it cannot be required")
        out[name] = InputSpec(
            name=name,
            type=itype,
            description=str(spec.get("description") or ""),
            required=required,
            default=spec.get("default"),
            line=nline,
        )
    return out


def _parse_steps(errs: _Errors, raw: Any, line: int) -> list[Step]:
    if not isinstance(raw, list) or not raw:
        errs.add(line, "'steps' must be a non-empty list")
        return []
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        if not isinstance(item, _Map):
            errs.add(line, f"step #{index + 1} must be a mapping (id, action, with, ...)")
            continue
        sid = item.get("id")
        label = str(sid) if sid is not None else f"#{index + 1}"
        kl = {str(k): v for k, v in item.key_lines.items()}
        raw_params = item.get("with")
        if isinstance(raw_params, _Map):
            kl.update({f"with.{k}": v for k, v in raw_params.key_lines.items()})

        def at(key: str, _item: _Map = item) -> int:
            return _item.key_lines.get(key, _item.line)

        if not isinstance(sid, str) or not _IDENT_RE.match(sid):
            errs.add(
                at("id"),
                "step id must be letters, digits and _ (it is referenced as steps.<id>)",
                label,
            )
        elif sid in seen:
            errs.add(at("id"), f"duplicate step id (first at line {seen[sid]})", label)
        else:
            seen[sid] = at("id")
        _unknown_keys(errs, item, STEP_KEYS, "the step", label)
        action = item.get("action")
        if not isinstance(action, str) or not action:
            errs.add(at("action"), "missing 'action'", label)
            action = ""
        params = item.get("with", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            errs.add(at("with"), "'with' must be a mapping of parameters", label)
            params = {}
        on_failure = item.get("on_failure", "halt")
        if on_failure not in ON_FAILURE:
            errs.add(at("on_failure"), "on_failure must be 'halt' or 'continue'", label)
            on_failure = "halt"
        approval = item.get("approval", False)
        if approval is True:
            approval = f"Run step '{label}'?"
        elif approval is False or approval is None:
            approval = None
        elif not isinstance(approval, str) or not approval.strip():
            errs.add(at("approval"), "approval must be false or the question to ask", label)
            approval = None
        foreach = item.get("foreach")
        if foreach is not None and not isinstance(foreach, (str, list)):
            errs.add(at("foreach"), "foreach must be a template or a list", label)
            foreach = None
        when = item.get("when")
        if when is not None and not isinstance(when, (str, bool)):
            errs.add(at("when"), "when must be an expression", label)
            when = None
        steps.append(
            Step(
                id=str(sid) if sid is not None else label,
                action=action,
                params=_plain(params),
                foreach=_plain(foreach),
                when=when,
                on_failure=on_failure,
                approval=approval,
                description=str(item.get("description") or ""),
                line=item.line,
                key_lines=kl,
            )
        )
    return steps


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- semantic checks


def _step_refs(step: Step) -> list[tuple[str, Any, tuple[Any, ...]]]:
    """(key, line-key, ref) for every reference in the step; raises TemplateError on bad syntax."""
    out = []
    for key, value in step.params.items():
        out.extend(("with", key, r) for r in value_refs(value))
    if step.foreach is not None:
        out.extend(("foreach", "foreach", r) for r in value_refs(step.foreach))
    if step.when is not None:
        expr = compile_condition(step.when)
        out.extend(("when", "when", r) for r in (expr.refs if expr else []))
    if step.approval and is_template(step.approval):
        out.extend(("approval", "approval", r) for r in compile_template(step.approval).refs)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Elementary cycles found by DFS (one per back edge), each as [a, b, ..., a]."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def _semantic_errors(pb: Playbook, actions: Any) -> list[str]:
    errs = _Errors(pb.source)
    order: dict[str, int] = {}
    for i, s in enumerate(pb.steps):
        order.setdefault(s.id, i)  # a duplicate id is reported once, by the parser
    graph: dict[str, set[str]] = {s.id: set() for s in pb.steps}
    forward: list[tuple[Step, str, int]] = []
    for index, step in enumerate(pb.steps):
        if actions is not None and step.action:
            if step.action not in actions:
                errs.add(
                    step.line_of("action"),
                    f"unknown action '{step.action}'{actions.suggest(step.action)}",
                    step.id,
                )
            else:
                action = actions.get(step.action)
                missing = sorted(set(action.required) - set(step.params))
                if missing:
                    errs.add(
                        step.line_of("with"),
                        f"action '{step.action}' needs parameter(s): {', '.join(missing)}",
                        step.id,
                    )
                allowed = set(action.required) | set(action.optional)
                for key in step.params:
                    if key not in allowed:
                        takes = ", ".join(sorted(allowed)) or "none"
                        errs.add(
                            step.line_of(f"with.{key}"),
                            f"action '{step.action}' takes no parameter '{key}'"
                            f"{_suggest(key, allowed)} (takes: {takes})",
                            step.id,
                        )
        try:
            refs = _step_refs(step)
        except TemplateError as exc:
            errs.add(step.line, f"template: {exc}", step.id)
            continue
        for where, key, ref in refs:
            line = step.line_of(f"with.{key}" if where == "with" else where)
            name = ref_to_str(ref)
            root = ref[0]
            if root == "inputs":
                if len(ref) > 1 and ref[1] not in pb.inputs:
                    errs.add(
                        line,
                        f"'{name}' refers to undeclared input '{ref[1]}'"
                        f"{_suggest(ref[1], pb.inputs)}",
                        step.id,
                    )
            elif root == "steps":
                if len(ref) < 2:
                    errs.add(line, "'steps' must name a step: steps.<id>.outputs...", step.id)
                    continue
                target = ref[1]
                if target not in order:
                    errs.add(
                        line,
                        f"'{name}' refers to unknown step '{target}'{_suggest(target, order)}",
                        step.id,
                    )
                    continue
                if target == step.id:
                    errs.add(line, f"'{name}': a step cannot use its own outputs", step.id)
                    continue
                if len(ref) > 2 and ref[2] not in ("outputs", "status"):
                    errs.add(line, f"'{name}': use steps.{target}.outputs or .status", step.id)
                graph[step.id].add(target)
                if order[target] > index:
                    forward.append((step, str(target), line))
            elif root == "item":
                if step.foreach is None:
                    errs.add(line, f"'{name}': 'item' exists only in steps with foreach", step.id)
                elif where == "foreach":
                    errs.add(line, "foreach cannot refer to its own item", step.id)
            elif root == "incident" and len(ref) > 1 and ref[1] not in INCIDENT_FIELDS:
                fields = ", ".join(sorted(INCIDENT_FIELDS))
                errs.add(line, f"'{name}': incident has only {fields}", step.id)
        if step.foreach is not None and isinstance(step.foreach, str):
            try:
                whole = compile_template(step.foreach).whole
            except TemplateError:
                whole = True  # reported above
            if not whole:
                errs.add(step.line_of("foreach"), "foreach must be one '{{ ... }}' list", step.id)
    cycles = _cycles(graph)
    in_cycle = {node for cycle in cycles for node in cycle}
    for cycle in cycles:
        first = pb.steps[order[cycle[0]]]
        errs.add(first.line, "dependency cycle: " + " -> ".join(cycle), first.id)
    for step, target, line in forward:
        if step.id in in_cycle and target in in_cycle:
            continue
        errs.add(line, f"refers to step '{target}', which runs later (steps run in order)", step.id)
    return list(errs)


def validate(playbook: Playbook, actions: Any) -> None:
    """Refuse the playbook (PlaybookError listing every problem) before anything runs."""
    errors = _semantic_errors(playbook, actions)
    if errors:
        raise PlaybookError(errors)


# --------------------------------------------------------------------------- loading


def builtin_playbooks() -> list[str]:
    """Ids of the playbooks shipped with assay."""
    root = importlib.resources.files("assay.playbooks")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_playbook(source: str | os.PathLike[str], actions: Any = None) -> Playbook:
    """A playbook from a path, or a built-in id (``data-poisoning``); validated."""
    text_source = str(source)
    looks_like_path = (
        isinstance(source, os.PathLike)
        or os.sep in text_source
        or "/" in text_source
        or text_source.endswith((".yaml", ".yml"))
    )
    if not looks_like_path and _PLAYBOOK_ID_RE.match(text_source):
        resource = importlib.resources.files("assay.playbooks") / f"{text_source}.yaml"
        if resource.is_file():
            return parse_playbook(
                resource.read_text(encoding="utf-8"), f"{text_source}.yaml", actions
            )
    path = Path(source).expanduser()
    if not path.is_file():
        known = ", ".join(builtin_playbooks())
        raise NotFoundError(f"no playbook '{source}': not a file nor a built-in ({known})")
    return parse_playbook(read_playbook_file(path), text_source, actions)


def read_playbook_file(path: str | os.PathLike[str]) -> str:
    """The text of a playbook file: a regular file (no FIFO, device or folder), at most
    ``MAX_PLAYBOOK_BYTES``, UTF-8. Raises FormatError otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FormatError(f"cannot read playbook {path}: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FormatError(f"cannot read playbook {path}: not a regular file")
        chunks, size = [], 0
        while size <= MAX_PLAYBOOK_BYTES:
            chunk = os.read(fd, MAX_PLAYBOOK_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise FormatError(f"cannot read playbook {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if size > MAX_PLAYBOOK_BYTES:
        raise FormatError(f"playbook {path} is larger than {MAX_PLAYBOOK_BYTES} bytes")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"playbook {path} is not UTF-8 text") from exc


# --------------------------------------------------------------------------- inputs


def _coerce(spec: InputSpec, value: Any) -> Any:
    t = spec.type
    if t == "list":
        if isinstance(value, (list, tuple)):
            return list(value)
        return [v.strip() for v in str(value).split(",") if v.strip()]
    if isinstance(value, (list, tuple, dict)):
        raise InputError(f"input '{spec.name}' must be a single {t}, not a list")
    text = str(value).strip()
    if t == "dataset" and not _DATASET_RE.match(text):
        raise InputError(f"input '{spec.name}' must be a dataset version NAME@V, got '{text}'")
    if t == "model":
        if text.startswith("models:/"):
            text = text[len("models:/") :]
        if not _MODEL_RE.match(text):
            raise InputError(
                f"input '{spec.name}' must be a model NAME, NAME/V or NAME@alias, got '{text}'"
            )
    if t == "path" and not text:
        raise InputError(f"input '{spec.name}' must be a path")
    if t == "datetime":
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InputError(
                f"input '{spec.name}' must be an ISO 8601 time like 2024-05-01T03:00:00Z, "
                f"got '{text}'"
            ) from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)  # documented: naive times are UTC
        return when.astimezone(timezone.utc).isoformat()
    return text


def resolve_inputs(playbook: Playbook, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check and type the inputs; apply defaults. Raises InputError naming every missing input."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(playbook.inputs))
    if unknown:
        known = ", ".join(playbook.inputs) or "none"
        raise InputError(
            f"playbook '{playbook.id}' has no input(s) {', '.join(unknown)} (inputs: {known})"
        )
    missing = [
        s for s in playbook.inputs.values() if s.required and given.get(s.name) in (None, "")
    ]
    if missing:
        names = ", ".join(
            f"{s.name} ({s.description or s.type})" if s.description else s.name for s in missing
        )
        example = " ".join(f"--set {s.name}=..." for s in missing)
        raise InputError(f"playbook '{playbook.id}' needs input(s): {names}; pass {example}")
    out: dict[str, Any] = {}
    for spec in playbook.inputs.values():
        value = given.get(spec.name)
        if value in (None, ""):
            value = spec.default
        out[spec.name] = None if value is None else _coerce(spec, value)
    return out

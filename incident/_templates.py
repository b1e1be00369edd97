"""Templates and ``when`` expressions for playbooks, evaluated without running code.

A template is a string with ``{{ expression }}`` parts::

    "{{ inputs.dataset }}"                   whole-string: keeps the value's type (a list stays a list)
    "rolled back {{ item.model }} to v{{ steps.rb.outputs.to_version }}"   embedded: renders to text

An expression is a tiny, closed language parsed with :mod:`ast` and walked by hand here; nothing is
ever passed to ``eval``. Allowed: constants, the names ``inputs``, ``steps``, ``item``, ``incident``
(and ``true``/``false``/``null``), attribute and subscript access (no ``_`` names), lists and tuples,
comparisons, ``and``/``or``/``not``, a unary minus on numbers, and three filters written after ``|``:
``x | length``, ``x | default(value)``, ``x | join(', ')``. Anything else (calls, comprehensions,
lambdas, arithmetic, dunder access) is refused when the playbook is validated.

Bounded on any input: templates are split in one linear scan (no backtracking regex), an
expression is at most ``MAX_EXPRESSION_CHARS`` characters and its syntax tree at most
``MAX_EXPRESSION_DEPTH`` deep (checked without recursion before anything else walks it), so a
hostile template ends in one ``TemplateError`` line, never a ``RecursionError``.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from assay.core.errors import FormatError

__all__ = [
    "MAX_EXPRESSION_CHARS",
    "MAX_EXPRESSION_DEPTH",
    "ROOTS",
    "Expression",
    "MissingValueError",
    "Template",
    "TemplateError",
    "compile_condition",
    "compile_template",
    "evaluate_condition",
    "is_template",
    "parse_expression",
    "ref_to_str",
    "render_value",
    "value_refs",
]

ROOTS = frozenset({"inputs", "steps", "item", "incident"})
_CONSTANT_NAMES = {"true": True, "false": False, "null": None, "none": None}
_FILTERS = {"length": (0, 0), "default": (1, 1), "join": (0, 1)}
_COMPARE = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
}
#: Longest expression between ``{{ }}`` (or in ``when:``); playbook expressions are a line or two.
MAX_EXPRESSION_CHARS = 2000
#: Deepest syntax tree of an expression (``not not ... x``, nested lists, long attribute chains).
MAX_EXPRESSION_DEPTH = 50
_SHOWN = 80  # characters of a template or expression quoted in an error message

Ref = tuple[Any, ...]  # ("steps", "radius", "outputs", "models")


class TemplateError(FormatError):
    """A template or expression is malformed, or could not be evaluated."""


class MissingValueError(TemplateError):
    """A reference names a value that does not exist (yet)."""

    def __init__(self, ref: str, why: str = "is not set") -> None:
        self.ref = ref
        super().__init__(f"'{clip(ref)}' {why}")


def clip(text: str, limit: int = _SHOWN) -> str:
    """``text`` for an error message: one line of printable characters, at most ``limit`` long."""
    raw = str(text)
    flat = " ".join(raw[: limit * 4].split())  # a prefix: linear in ``limit``, not in ``text``
    if not flat.isprintable():
        flat = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in flat)
    if len(flat) <= limit and len(raw) <= limit * 4:
        return flat
    return flat[: limit - 3] + "..."


def ref_to_str(ref: Ref) -> str:
    out = str(ref[0]) if ref else ""
    for part in ref[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


# --------------------------------------------------------------------------- parsing


def _split_pipes(text: str) -> list[str]:
    """Split on top-level ``|``: outside quotes and brackets."""
    parts, depth, quote, current = [], 0, "", []
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            current.append(ch)
        elif ch in "([{":
            depth += 1
            current.append(ch)
        elif ch in ")]}":
            depth -= 1
            current.append(ch)
        elif ch == "|" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    if quote:
        raise TemplateError(f"unterminated string in expression '{clip(text)}'")
    parts.append("".join(current))
    return parts


def _parse(text: str, what: str) -> ast.expr:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise TemplateError(f"bad {what} '{clip(text)}': {exc.msg}") from exc
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, too deep for the parser
        raise TemplateError(f"bad {what} '{clip(text)}': {type(exc).__name__}") from exc
    _check_depth(tree.body, text)
    return tree.body


def _check_depth(root: ast.AST, text: str) -> None:
    """Refuse trees deeper than ``MAX_EXPRESSION_DEPTH``, walking them without recursion."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise TemplateError(
                f"expression '{clip(text)}' is nested more than {MAX_EXPRESSION_DEPTH} deep"
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check_node(node: ast.AST, source: str) -> None:
    """Refuse every construct outside the closed language."""

    def refuse(what: str) -> None:
        raise TemplateError(f"'{clip(source)}': {what} is not allowed in templates")

    if isinstance(node, ast.Constant):
        if not isinstance(node.value, (str, int, float, bool, type(None))):
            refuse(f"constant {clip(repr(node.value))}")
    elif isinstance(node, ast.Name):
        if node.id not in ROOTS and node.id not in _CONSTANT_NAMES:
            names = ", ".join(sorted(ROOTS))
            raise TemplateError(
                f"'{clip(source)}': unknown name '{clip(node.id)}' (use one of {names})"
            )
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            refuse(f"attribute '{clip(node.attr)}'")
        _check_node(node.value, source)
    elif isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Slice):
            refuse("a slice")
        key = node.slice.value if isinstance(node.slice, ast.Constant) else None
        if isinstance(key, str) and key.startswith("_"):
            refuse(f"key '{clip(key)}'")
        _check_node(node.value, source)
        _check_node(node.slice, source)
    elif isinstance(node, (ast.List, ast.Tuple)):
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                refuse("a starred expression")
            _check_node(elt, source)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                refuse(f"operator {type(op).__name__}")
        _check_node(node.left, source)
        for comp in node.comparators:
            _check_node(comp, source)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _check_node(value, source)
    elif isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            _check_node(node.operand, source)
        elif isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            if not isinstance(node.operand.value, (int, float)) or isinstance(
                node.operand.value, bool
            ):
                refuse("unary minus on a non-number")
        else:
            refuse(f"operator {type(node.op).__name__}")
    elif isinstance(node, ast.Call):
        refuse("a function call (filters go after '|': length, default(...), join(...))")
    else:
        refuse(f"{type(node).__name__}")


def _chain(node: ast.AST) -> Ref | None:
    """The reference path of ``a.b[0]['c']`` as ("a", "b", 0, "c"); None if not a plain chain."""
    parts: list[Any] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            parts.append(node.slice.value)
            node = node.value
        elif isinstance(node, ast.Subscript):
            parts.clear()  # dynamic index: the prefix is the reference
            node = node.value
        elif isinstance(node, ast.Name):
            if node.id in _CONSTANT_NAMES:
                return None
            return (node.id, *reversed(parts))
        else:
            return None


def _collect_refs(node: ast.AST, out: list[Ref]) -> None:
    if isinstance(node, (ast.Attribute, ast.Subscript, ast.Name)):
        ref = _chain(node)
        if ref is not None:
            out.append(ref)
        # dynamic subscripts may hold references of their own
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            if isinstance(node, ast.Subscript) and not isinstance(node.slice, ast.Constant):
                _collect_refs(node.slice, out)
            node = node.value
        return
    for child in ast.iter_child_nodes(node):
        _collect_refs(child, out)


@dataclass(frozen=True)
class Expression:
    """A parsed expression: a base and a chain of filters."""

    source: str
    base: ast.expr
    filters: tuple[tuple[str, tuple[ast.expr, ...]], ...]
    compare: tuple[tuple[ast.cmpop, ...], tuple[ast.expr, ...]] | None = None

    @property
    def refs(self) -> list[Ref]:
        out: list[Ref] = []
        _collect_refs(self.base, out)
        for _name, args in self.filters:
            for arg in args:
                _collect_refs(arg, out)
        for comp in self.compare[1] if self.compare else ():
            _collect_refs(comp, out)
        return out

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        missing: MissingValueError | None = None
        try:
            value = _eval(self.base, context, self.source)
        except MissingValueError as exc:
            missing, value = exc, None
        for name, args in self.filters:
            if name == "default":
                if missing is not None or value is None:
                    value = _eval(args[0], context, self.source)
                    missing = None
                continue
            if missing is not None:
                raise missing
            if name == "length":
                try:
                    value = len(value)
                except TypeError as exc:
                    raise TemplateError(
                        f"'{clip(self.source)}': length of a {type(value).__name__}"
                    ) from exc
            elif name == "join":
                sep = _eval(args[0], context, self.source) if args else ","
                if not isinstance(value, (list, tuple)):
                    raise TemplateError(f"'{clip(self.source)}': join needs a list")
                value = str(sep).join(_to_text(v) for v in value)
        if missing is not None:
            raise missing
        if self.compare is not None:
            ops, comparators = self.compare
            node = ast.Compare(
                left=ast.Constant(value=None), ops=list(ops), comparators=list(comparators)
            )
            return _compare(value, node, context, self.source)
        return value


def parse_expression(text: str) -> Expression:
    """Parse ``base | filter | filter(arg)``; raise TemplateError on anything outside the language."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise TemplateError(
            f"expression '{clip(text)}' is longer than {MAX_EXPRESSION_CHARS} characters"
        )
    source = " ".join(text.split())
    if not source:
        raise TemplateError("empty expression")
    segments = _split_pipes(text)
    base = _parse(segments[0], "expression")
    _check_node(base, source)
    filters = []
    tail: tuple[tuple[ast.cmpop, ...], tuple[ast.expr, ...]] | None = None
    for number, seg in enumerate(segments[1:], start=2):
        node = _parse(seg, "filter") if seg.strip() else None
        if (
            number == len(segments)
            and isinstance(node, ast.Compare)
            and isinstance(node.left, (ast.Name, ast.Call))
        ):
            # `x | length > 0` compares the filtered value, as in Jinja
            for op in node.ops:
                if type(op) not in _COMPARE:
                    raise TemplateError(
                        f"'{clip(source)}': operator {type(op).__name__} is not allowed"
                    )
            for comp in node.comparators:
                _check_node(comp, source)
            tail = (tuple(node.ops), tuple(node.comparators))
            node = node.left
        if isinstance(node, ast.Name):
            name, args = node.id, ()
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            name, args = node.func.id, tuple(node.args)
        else:
            raise TemplateError(f"'{clip(source)}': bad filter '{clip(seg)}'")
        if name not in _FILTERS:
            allowed = ", ".join(sorted(_FILTERS))
            raise TemplateError(
                f"'{clip(source)}': unknown filter '{clip(name)}' (allowed: {allowed})"
            )
        low, high = _FILTERS[name]
        if not low <= len(args) <= high:
            raise TemplateError(f"'{clip(source)}': filter '{name}' takes {low}-{high} argument(s)")
        for arg in args:
            _check_node(arg, source)
        filters.append((name, args))
    return Expression(source, base, tuple(filters), tail)


# --------------------------------------------------------------------------- evaluation


def _describe(node: ast.AST) -> str:
    ref = _chain(node)
    return ref_to_str(ref) if ref else ast.unparse(node)


def _lookup(container: Any, key: Any, node: ast.AST, parent: ast.AST) -> Any:
    if container is None:
        raise MissingValueError(_describe(parent), "is null")
    if isinstance(container, Mapping):
        try:
            present = key in container
        except TypeError:  # an unhashable key: inputs[[1]]
            raise TemplateError(f"'{clip(_describe(node))}': a key is text or a number") from None
        if not present:
            raise MissingValueError(_describe(node))
        return container[key]
    if isinstance(container, (list, tuple)):
        if not isinstance(key, int) or isinstance(key, bool):
            raise TemplateError(f"'{_describe(node)}': a list takes a number index")
        if not -len(container) <= key < len(container):
            raise MissingValueError(_describe(node), "is out of range")
        return container[key]
    raise TemplateError(f"'{_describe(node)}': a {type(container).__name__} has no fields")


def _eval(node: ast.AST, ctx: Mapping[str, Any], source: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _CONSTANT_NAMES:
            return _CONSTANT_NAMES[node.id]
        if node.id not in ctx:
            raise MissingValueError(node.id)
        return ctx[node.id]
    if isinstance(node, ast.Attribute):
        return _lookup(_eval(node.value, ctx, source), node.attr, node, node.value)
    if isinstance(node, ast.Subscript):
        container = _eval(node.value, ctx, source)
        key = _eval(node.slice, ctx, source)
        if isinstance(key, str) and key.startswith("_"):
            raise TemplateError(f"'{clip(source)}': key '{clip(key)}' is not allowed")
        return _lookup(container, key, node, node.value)
    if isinstance(node, ast.List):
        return [_eval(e, ctx, source) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_eval(e, ctx, source) for e in node.elts)
    if isinstance(node, ast.BoolOp):
        is_and = isinstance(node.op, ast.And)
        value: Any = None
        for sub in node.values:
            value = _eval(sub, ctx, source)
            if bool(value) != is_and:
                return value
        return value
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, ctx, source)
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    if isinstance(node, ast.Compare):
        return _compare(_eval(node.left, ctx, source), node, ctx, source)
    raise TemplateError(
        f"'{clip(source)}': {type(node).__name__} is not allowed"
    )  # checked at parse


def _compare(left: Any, node: ast.Compare, ctx: Mapping[str, Any], source: str) -> bool:
    for op, comp in zip(node.ops, node.comparators, strict=True):
        right = _eval(comp, ctx, source)
        try:
            ok = _COMPARE[type(op)](left, right)
        except TypeError as exc:
            raise TemplateError(
                f"'{clip(source)}': cannot compare {type(left).__name__} with {type(right).__name__}"
            ) from exc
        if not ok:
            return False
        left = right
    return True


def _to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(_to_text(v) for v in value)
    if isinstance(value, Mapping):
        try:
            return json.dumps(value, sort_keys=True, default=str)
        except TypeError:  # keys of mixed types cannot be sorted: keep their order
            return json.dumps(value, default=str)
    return str(value)


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Template:
    """A string with ``{{ }}`` parts. ``whole`` templates keep the value's type."""

    source: str
    parts: tuple[str | Expression, ...]

    @property
    def whole(self) -> bool:
        exprs = [p for p in self.parts if isinstance(p, Expression)]
        texts = [p for p in self.parts if isinstance(p, str)]
        return len(exprs) == 1 and all(not t.strip() for t in texts)

    @property
    def refs(self) -> list[Ref]:
        return [r for p in self.parts if isinstance(p, Expression) for r in p.refs]

    def render(self, context: Mapping[str, Any], *, partial: bool = False) -> Any:
        """Render; with ``partial``, unresolved references stay as their template text."""
        if self.whole:
            expr = next(p for p in self.parts if isinstance(p, Expression))
            try:
                return expr.evaluate(context)
            except MissingValueError:
                if partial:
                    return self.source
                raise
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            try:
                out.append(_to_text(part.evaluate(context)))
            except MissingValueError:
                if not partial:
                    raise
                out.append("{{ " + part.source + " }}")
        return "".join(out)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def split_template(text: str) -> list[tuple[bool, str]]:
    """``text`` as (is_expression, text) pieces, in one left-to-right scan (linear time).

    An expression runs from ``{{`` to the first ``}}`` after it; a ``{{`` with no ``}}`` after it
    is refused, as is a ``{{`` inside an expression.
    """
    pieces: list[tuple[bool, str]] = []
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            pieces.append((False, text[pos:]))
            return pieces
        end = text.find("}}", start + 2)
        inner = text[start + 2 : end] if end >= 0 else ""
        if end < 0 or "{{" in inner:
            raise TemplateError(f"unclosed '{{{{' in template '{clip(text)}'")
        pieces.append((False, text[pos:start]))
        pieces.append((True, inner))
        pos = end + 2


def compile_template(text: str) -> Template:
    parts: list[str | Expression] = [
        parse_expression(piece) if is_expr else piece for is_expr, piece in split_template(text)
    ]
    return Template(text, tuple(p for p in parts if p != ""))


def render_value(value: Any, context: Mapping[str, Any], *, partial: bool = False) -> Any:
    """Render every template inside a value (strings, lists, mappings), keeping other values."""
    if is_template(value):
        return compile_template(value).render(context, partial=partial)
    if isinstance(value, Mapping):
        return {k: render_value(v, context, partial=partial) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [render_value(v, context, partial=partial) for v in value]
    return value


def value_refs(value: Any) -> list[Ref]:
    """Every reference in every template inside a value; raises TemplateError on bad syntax."""
    if is_template(value):
        return compile_template(value).refs
    if isinstance(value, Mapping):
        return [r for v in value.values() for r in value_refs(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in value_refs(v)]
    return []


def compile_condition(when: Any) -> Expression | None:
    """A ``when`` value: a YAML bool, a bare expression, or one ``{{ expression }}``."""
    if when is None:
        return None
    if isinstance(when, bool):
        return parse_expression("true" if when else "false")
    if not isinstance(when, str):
        raise TemplateError(f"'when' must be an expression, not {type(when).__name__}")
    text = when.strip()
    if text.startswith("{{"):
        template = compile_template(text)
        if not template.whole:
            raise TemplateError(f"'when' must be one expression: '{clip(text)}'")
        return next(p for p in template.parts if isinstance(p, Expression))
    return parse_expression(text)


def evaluate_condition(when: Any, context: Mapping[str, Any]) -> bool:
    expr = compile_condition(when)
    return True if expr is None else bool(expr.evaluate(context))

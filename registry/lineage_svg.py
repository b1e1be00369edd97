"""The blast radius as a picture: lineage drawn as a self-contained SVG.

Input is a lineage report as plain data (:meth:`assay.registry.lineage.LineageReport.to_dict`, which
is also what the ``lineage.blast_radius`` step records in an incident). Layout is layered, left to
right: what the subject was made from (upstream, by depth), the subject, what was made from it
(downstream, by depth), then the serving aliases. The subject and everything downstream of it is
affected, and so is every alias serving an affected version: those are drawn in red and carry
``data-affected="true"``.

Nothing is fetched when the picture is viewed (no script, no external reference, no font), and every
piece of text is XML-escaped, with the characters XML cannot hold dropped, so a hostile name can
neither break the document nor inject markup. Large graphs are cut at ``MAX_NODES`` with a note.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from assay.core.states import BAD_STATES

__all__ = ["MAX_NODES", "lineage_svg", "xml_text"]

MAX_NODES = 400
_BOX_W, _BOX_H, _COL_GAP, _ROW_GAP, _MARGIN, _HEADER = 230, 46, 70, 14, 20, 34
_LABEL_CHARS = 30
# Characters XML 1.0 cannot hold at all (escaping does not help): C0 controls but tab/LF/CR,
# surrogates, U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: Any) -> str:
    """``value`` as XML character data or attribute text: escaped, XML-invalid characters gone."""
    text = _NOT_XML.sub("", "" if value is None else str(value))
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def _clip(text: str, limit: int = _LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass
class _Node:
    key: str  # unique: a ref, or model@alias
    label: str
    detail: str  # state, or "serving"
    column: int
    affected: bool
    kind: str  # dataset, model, alias
    source: bool = False
    row: int = 0
    edges_in: list[str] = field(default_factory=list)


def _short(entry: Mapping[str, Any]) -> str:
    name, version = str(entry.get("name", "")), str(entry.get("version", ""))
    return f"{name}@{version}" if entry.get("kind") == "dataset" else f"{name}/{version}"


def _graph(data: Mapping[str, Any]) -> tuple[list[_Node], list[tuple[str, str]], int]:
    subject = data.get("subject") or {}
    nodes: dict[str, _Node] = {}
    edges: list[tuple[str, str]] = []
    dropped = 0

    def add(node: _Node) -> bool:
        nonlocal dropped
        if node.key in nodes:
            return True
        if len(nodes) >= MAX_NODES:
            dropped += 1
            return False
        nodes[node.key] = node
        return True

    subject_ref = str(subject.get("ref") or data.get("source") or "")
    add(
        _Node(
            subject_ref,
            _short(subject) if subject else subject_ref,
            str(subject.get("state", "")),
            0,
            True,
            str(subject.get("kind") or data.get("kind") or "model"),
            source=True,
        )
    )
    for direction, sign in (("upstream", -1), ("downstream", 1)):
        for entry in data.get(direction) or ():
            ref = str(entry.get("ref", ""))
            depth = int(entry.get("depth") or 1)
            node = _Node(
                ref,
                _short(entry),
                str(entry.get("state", "")),
                sign * depth,
                direction == "downstream",
                str(entry.get("kind", "model")),
            )
            if not add(node):
                continue
            via = str(entry.get("via", ""))
            edges.append((ref, via) if sign < 0 else (via, ref))
    served_by = {
        str(e.get("ref", "")): e.get("aliases") or ()
        for d in ("upstream", "downstream")
        for e in data.get(d) or ()
    }
    served_by[subject_ref] = subject.get("aliases") or ()
    aliases: list[tuple[str, str, bool]] = []  # (version ref, alias, affected)
    for node in list(nodes.values()):
        if node.kind == "model":
            aliases += [(node.key, str(a), node.affected) for a in served_by.get(node.key, ())]
    last = max((n.column for n in nodes.values()), default=0) + 1
    for ref, alias, affected in aliases:
        model = nodes[ref].label.rpartition("/")[0]
        key = f"alias:{model}@{alias}"
        if add(_Node(key, f"{model}@{alias}", "serving", last, affected, "alias")):
            edges.append((ref, key))
    known = [(a, b) for a, b in edges if a in nodes and b in nodes]
    return list(nodes.values()), known, dropped


def lineage_svg(data: Mapping[str, Any], title: str | None = None) -> str:
    """An SVG document of the lineage report ``data`` (``LineageReport.to_dict()``)."""
    nodes, edges, dropped = _graph(data)
    columns = sorted({n.column for n in nodes})
    index = {c: i for i, c in enumerate(columns)}
    rows: dict[int, int] = {}
    order = {"dataset": 0, "model": 1, "alias": 2}
    for node in sorted(nodes, key=lambda n: (n.column, order.get(n.kind, 3), n.label)):
        node.row = rows.get(node.column, 0)
        rows[node.column] = node.row + 1
    height_rows = max(rows.values(), default=1)
    width = 2 * _MARGIN + len(columns) * _BOX_W + max(len(columns) - 1, 0) * _COL_GAP
    height = 2 * _MARGIN + _HEADER + height_rows * (_BOX_H + _ROW_GAP) + 24

    def x_of(node: _Node) -> int:
        return _MARGIN + index[node.column] * (_BOX_W + _COL_GAP)

    def y_of(node: _Node) -> int:
        return _MARGIN + _HEADER + node.row * (_BOX_H + _ROW_GAP)

    by_key = {n.key: n for n in nodes}
    heading = title or f"blast radius of {data.get('source') or ''}"
    affected = sum(1 for n in nodes if n.affected and n.kind != "alias")
    serving = sum(1 for n in nodes if n.affected and n.kind == "alias")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{xml_text(heading)}</title>",
        "<style>.n rect{fill:#eef3fb;stroke:#5b7bb2;stroke-width:1.2}"
        ".n.affected rect{fill:#fde7e9;stroke:#b00020;stroke-width:2}"
        ".n.source rect{stroke-width:3}.n.alias rect{fill:#f4f4f4;stroke:#777}"
        ".n.alias.affected rect{fill:#fde7e9;stroke:#b00020}"
        ".e{stroke:#8a8a8a;stroke-width:1.2;fill:none}.e.affected{stroke:#b00020}"
        ".d{fill:#555;font-size:11px}</style>",
        f'<text x="{_MARGIN}" y="{_MARGIN + 12}" font-size="14" font-weight="bold">'
        f"{xml_text(_clip(heading, 100))}</text>",
        f'<text x="{_MARGIN}" y="{_MARGIN + 28}" class="d">{affected} affected version(s), '
        f"{serving} serving alias(es) affected (red)"
        + (f"; {dropped} more not drawn" if dropped else "")
        + "</text>",
    ]
    for a, b in edges:
        src, dst = by_key[a], by_key[b]
        x1, y1 = x_of(src) + _BOX_W, y_of(src) + _BOX_H // 2
        x2, y2 = x_of(dst), y_of(dst) + _BOX_H // 2
        mid = (x1 + x2) // 2
        cls = "e affected" if src.affected and dst.affected else "e"
        out.append(f'<path class="{cls}" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"/>')
    for node in nodes:
        classes = ["n", node.kind]
        if node.affected:
            classes.append("affected")
        if node.source:
            classes.append("source")
        x, y = x_of(node), y_of(node)
        detail = node.detail
        if node.kind != "alias" and node.detail in BAD_STATES:
            detail += " (bad)"
        if node.source:
            detail = f"source: {detail}" if detail else "source"
        out.append(
            f'<g class="{" ".join(classes)}" data-ref="{xml_text(node.key)}" '
            f'data-affected="{"true" if node.affected else "false"}">'
            f"<title>{xml_text(node.label)}: {xml_text(node.detail)}</title>"
            f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="6"/>'
            f'<text x="{x + 10}" y="{y + 19}">{xml_text(_clip(node.label))}</text>'
            f'<text x="{x + 10}" y="{y + 36}" class="d">{xml_text(_clip(detail))}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"

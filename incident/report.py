"""Incident reports in Markdown, JSON and self-contained HTML, and the ``report.write`` action.

A report holds: the incident (playbook, severity, threat ids with names, inputs, status), the
timeline of every step and foreach item, the blast radius as an inline SVG picture (HTML only:
datasets -> versions -> serving aliases, affected ones in red), what changed (results of
state-changing steps), the evidence found in step outputs (verification results, trace matches with
p-values, audit inclusion proofs and checkpoints) plus any evidence the caller adds, the gate
results recorded for the affected versions' bytes (the caller's ``gate_results`` evidence: gate,
passed/failed/error, key numbers, signer), and the failures and warnings.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from assay.core.atomic import atomic_write
from assay.core.errors import FormatError
from assay.incident._records import FAILED, SUCCEEDED_WITH_WARNINGS, Incident, StepRecord
from assay.incident.actions import SPECS, ActionContext, SpecAction
from assay.incident.playbook import Playbook, threat_name

__all__ = ["FORMATS", "ReportWriteAction", "build_report", "render_report"]

FORMATS = ("md", "json", "html")
# Output keys that are evidence, whichever action produced them.
EVIDENCE_KEYS = (
    "results",  # registry.verify: per-version verification
    "failed",
    "match",  # watermark.trace
    "version",
    "method",
    "p_value",
    "z",
    "similarity",
    "inclusion_proof",  # audit log
    "audit_index",
    "checkpoint",
)


def _mutating(playbook: Playbook | None, step_id: str) -> bool:
    if playbook is None:
        return False
    for step in playbook.steps:
        if step.id == step_id:
            spec = SPECS.get(step.action)
            return bool(spec and spec.mutates)
    return False


def _action_of(playbook: Playbook | None, step_id: str) -> str:
    if playbook is not None:
        for step in playbook.steps:
            if step.id == step_id:
                return step.action
    return ""


def _label(rec: StepRecord) -> str:
    return rec.step_id if rec.item_index is None else f"{rec.step_id}[{rec.item_index}]"


def build_report(
    incident: Incident,
    steps: list[StepRecord],
    playbook: Playbook | None,
    evidence: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report as plain data (what the JSON format writes)."""
    timeline = []
    changes = []
    found: list[dict[str, Any]] = []
    problems = []
    ordered = sorted(steps, key=lambda r: (r.started_at or r.finished_at or "", _label(r)))
    for rec in ordered:
        out = rec.outputs or {}
        timeline.append(
            {
                "step": rec.step_id,
                "item": rec.item_index,
                "action": _action_of(playbook, rec.step_id),
                "status": rec.status,
                "started_at": rec.started_at,
                "finished_at": rec.finished_at,
                "summary": out.get("summary") or out.get("reason"),
                "error": rec.error,
            }
        )
        is_leaf = rec.item_index is not None or "items" not in out
        if (
            is_leaf
            and rec.outputs
            and rec.status != FAILED
            and _mutating(playbook, rec.step_id)
            and out.get("changed", True) is not False
        ):
            changes.append({"step": _label(rec), "summary": out.get("summary") or _compact(out)})
        if is_leaf and rec.outputs:
            picked = {k: out[k] for k in EVIDENCE_KEYS if k in out}
            if picked:
                found.append({"step": _label(rec), **picked})
        if rec.status == FAILED and rec.error:
            problems.append({"step": _label(rec), "kind": "failed", "message": rec.error})
        for warning in out.get("warnings") or ():
            problems.append({"step": _label(rec), "kind": "warning", "message": str(warning)})
        if rec.status == SUCCEEDED_WITH_WARNINGS and not out.get("warnings"):
            problems.append({"step": _label(rec), "kind": "warning", "message": "see outputs"})
    gates: list[dict[str, Any]] = []
    for name, value in (evidence or {}).items():
        if name == "gate_results" and isinstance(value, list):
            gates = [g for g in value if isinstance(g, dict)]
            continue
        found.append({"step": "(added)", "name": str(name), "value": value})
    threats = [{"id": t, "name": threat_name(t)} for t in (playbook.threats if playbook else ())]
    return {
        "incident": incident.to_dict(),
        "playbook": {
            "id": incident.playbook_id,
            "digest": incident.playbook_digest,
            "description": playbook.description if playbook else "",
            "severity": playbook.severity if playbook else None,
            "threats": threats,
        },
        "timeline": timeline,
        "changes": changes,
        "evidence": found,
        "gate_results": gates,
        "problems": problems,
    }


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(", ", ": "))


def _md_cell(value: Any) -> str:
    text = "" if value is None else (value if isinstance(value, str) else _compact(value))
    return text.replace("|", "\\|").replace("\n", " ")


def _render_md(data: dict[str, Any]) -> str:
    inc, pb = data["incident"], data["playbook"]
    lines = [
        f"# Incident {inc['id']}: {pb['id']}",
        "",
        f"- **Status:** {inc['status']}" + (f" ({inc['detail']})" if inc.get("detail") else ""),
        f"- **Severity:** {pb['severity']}",
        f"- **Playbook:** `{pb['id']}` ({pb['digest']})",
        f"- **Started:** {inc['created_at']}  **Updated:** {inc['updated_at']}",
    ]
    if pb["description"]:
        lines.append(f"- **Description:** {' '.join(pb['description'].split())}")
    if pb["threats"]:
        lines += ["", "## Threats", ""]
        lines += [f"- `{t['id']}` {t['name']}".rstrip() for t in pb["threats"]]
    lines += ["", "## Inputs", ""]
    lines += [f"- `{k}`: {_md_cell(v)}" for k, v in sorted(inc["inputs"].items())] or ["(none)"]
    lines += [
        "",
        "## Timeline",
        "",
        "| started | step | action | status | result |",
        "|---|---|---|---|---|",
    ]
    for t in data["timeline"]:
        step = t["step"] if t["item"] is None else f"{t['step']}[{t['item']}]"
        result = t["error"] or t["summary"] or ""
        lines.append(
            f"| {_md_cell(t['started_at'])} | {_md_cell(step)} | {_md_cell(t['action'])} | "
            f"{t['status']} | {_md_cell(result)} |"
        )
    lines += ["", "## What changed", ""]
    lines += [f"- **{c['step']}**: {_md_cell(c['summary'])}" for c in data["changes"]] or [
        "Nothing was changed."
    ]
    lines += ["", "## Evidence", ""]
    if not data["evidence"]:
        lines.append("No evidence recorded.")
    for ev in data["evidence"]:
        body = {k: v for k, v in ev.items() if k != "step"}
        lines.append(f"- **{ev['step']}**: `{_md_cell(body)}`")
    if data["gate_results"]:
        lines += [
            "",
            "## Gate results of the affected versions",
            "",
            "| version | gate | status | key numbers | signer | recorded |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {_md_cell(g.get('version'))} | {_md_cell(g.get('gate'))} | "
            f"{_md_cell(g.get('status'))} | {_md_cell(g.get('metrics') or g.get('detail'))} | "
            f"{_md_cell(g.get('key_id'))} | {_md_cell(g.get('at'))} |"
            for g in data["gate_results"]
        ]
    if data["problems"]:
        lines += ["", "## Failures and warnings", ""]
        lines += [
            f"- {p['kind']} in **{p['step']}**: {_md_cell(p['message'])}" for p in data["problems"]
        ]
    return "\n".join(lines) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}"
    "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:4px 8px;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}code,pre{font-size:90%}"
    ".failed{color:#b00020;font-weight:bold}.succeeded-with-warnings{color:#a66a00}"
    "pre{white-space:pre-wrap;background:#f7f7f7;padding:6px}"
)


def _blast_radii(steps: list[StepRecord], playbook: Playbook | None) -> list[tuple[str, dict]]:
    """(step label, lineage outputs) of every finished ``lineage.blast_radius`` step."""
    out = []
    for rec in steps:
        outputs = rec.outputs or {}
        action = _action_of(playbook, rec.step_id)
        if rec.status == FAILED or not isinstance(outputs.get("subject"), dict):
            continue
        if action == "lineage.blast_radius" or (not action and "downstream" in outputs):
            out.append((_label(rec), outputs))
    return out


def _render_html(data: dict[str, Any], radii: list[tuple[str, dict]] = ()) -> str:
    e = html.escape
    inc, pb = data["incident"], data["playbook"]

    def cell(value: Any) -> str:
        text = "" if value is None else (value if isinstance(value, str) else _compact(value))
        return e(text)

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Incident {e(inc['id'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Incident {e(inc['id'])}: {e(pb['id'])}</h1><ul>",
        f"<li><b>Status:</b> {e(inc['status'])}"
        + (f" ({e(inc['detail'])})" if inc.get("detail") else "")
        + "</li>",
        f"<li><b>Severity:</b> {cell(pb['severity'])}</li>",
        f"<li><b>Playbook:</b> <code>{e(pb['id'])}</code> ({e(pb['digest'])})</li>",
        f"<li><b>Started:</b> {e(inc['created_at'])} <b>Updated:</b> {e(inc['updated_at'])}</li>",
        f"<li><b>Description:</b> {e(pb['description'] or '')}</li></ul>",
    ]
    if pb["threats"]:
        parts.append("<h2>Threats</h2><ul>")
        parts += [f"<li><code>{e(t['id'])}</code> {e(t['name'])}</li>" for t in pb["threats"]]
        parts.append("</ul>")
    parts.append("<h2>Inputs</h2><ul>")
    parts += [f"<li><code>{e(k)}</code>: {cell(v)}</li>" for k, v in sorted(inc["inputs"].items())]
    parts.append(
        "</ul><h2>Timeline</h2><table><tr><th>started</th><th>step</th><th>action</th>"
        "<th>status</th><th>result</th></tr>"
    )
    for t in data["timeline"]:
        step = t["step"] if t["item"] is None else f"{t['step']}[{t['item']}]"
        parts.append(
            f"<tr><td>{cell(t['started_at'])}</td><td>{e(step)}</td><td>{e(t['action'])}</td>"
            f'<td class="{e(t["status"])}">{e(t["status"])}</td>'
            f"<td>{cell(t['error'] or t['summary'])}</td></tr>"
        )
    parts.append("</table>")
    if radii:
        from assay.registry.lineage_svg import lineage_svg

        parts.append("<h2>Blast radius</h2>")
        for label, outputs in radii:
            source = outputs.get("source") or ""
            parts.append(
                f"<figure>{lineage_svg(outputs, f'blast radius of {source} (step {label})')}"
                f"<figcaption>{e(str(outputs.get('summary') or ''))}</figcaption></figure>"
            )
    parts.append("<h2>What changed</h2><ul>")
    parts += [f"<li><b>{e(c['step'])}</b>: {cell(c['summary'])}</li>" for c in data["changes"]]
    if not data["changes"]:
        parts.append("<li>Nothing was changed.</li>")
    parts.append("</ul><h2>Evidence</h2>")
    for ev in data["evidence"]:
        body = {k: v for k, v in ev.items() if k != "step"}
        dump = json.dumps(body, indent=2, sort_keys=True, default=str)
        parts.append(f"<h3>{e(ev['step'])}</h3><pre>{e(dump)}</pre>")
    if not data["evidence"]:
        parts.append("<p>No evidence recorded.</p>")
    if data["gate_results"]:
        parts.append(
            "<h2>Gate results of the affected versions</h2><table><tr><th>version</th>"
            "<th>gate</th><th>status</th><th>key numbers</th><th>signer</th><th>recorded</th></tr>"
        )
        parts += [
            f"<tr><td>{cell(g.get('version'))}</td><td>{cell(g.get('gate'))}</td>"
            f'<td class="{e(str(g.get("status")))}">{cell(g.get("status"))}</td>'
            f"<td>{cell(g.get('metrics') or g.get('detail'))}</td><td>{cell(g.get('key_id'))}</td>"
            f"<td>{cell(g.get('at'))}</td></tr>"
            for g in data["gate_results"]
        ]
        parts.append("</table>")
    if data["problems"]:
        parts.append("<h2>Failures and warnings</h2><ul>")
        parts += [
            f"<li>{e(p['kind'])} in <b>{e(p['step'])}</b>: {cell(p['message'])}</li>"
            for p in data["problems"]
        ]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_report(
    incident: Incident,
    steps: list[StepRecord],
    playbook: Playbook | None,
    evidence: Mapping[str, Any] | None = None,
    fmt: str = "md",
) -> str:
    """The report as text: ``fmt`` is md, json or html."""
    data = build_report(incident, steps, playbook, evidence)
    if fmt == "md":
        return _render_md(data)
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    if fmt == "html":
        return _render_html(data, _blast_radii(steps, playbook))
    raise FormatError(f"unknown report format '{fmt}' (use {', '.join(FORMATS)})")


class ReportWriteAction(SpecAction):
    """Write ``incident-<id>.<fmt>`` files. Params: ``formats`` (list or "md,json"; default md and
    json), ``directory`` (default ``$ASSAY_HOME/incidents/<incident id>``). Extra evidence comes from
    ``ctx.services["report_evidence"]``: a mapping, or a callable taking the incident id.

    The step runs while the incident is still running; when the incident stops, the engine calls
    :meth:`finalize`, which writes the same files again (atomically) with the final status."""

    spec = SPECS["report.write"]

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        formats = params.get("formats") or ["md", "json"]
        if isinstance(formats, str):
            formats = [f.strip() for f in formats.split(",") if f.strip()]
        if not isinstance(formats, (list, tuple)):
            raise FormatError("report formats must be a list such as [md, json, html]")
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            shown = ", ".join(str(f) for f in bad)
            raise FormatError(f"unknown report format(s) {shown} (use md, json, html)")
        directory = params.get("directory")
        if directory:
            folder = Path(str(directory)).expanduser()
        else:
            # The registry's home (which `--home` may have chosen), not just $ASSAY_HOME.
            registry = ctx.services.get("registry")
            if registry is not None:
                home = registry.settings.home
            else:
                from assay.core.settings import Settings

                home = Settings.from_env().home
            folder = home / "incidents" / ctx.incident_id
        paths = self._write(ctx, folder, list(formats))
        return {
            "paths": paths,
            "formats": list(formats),
            "directory": str(folder),
            "summary": f"report: {', '.join(paths)}",
        }

    def finalize(self, ctx: ActionContext, outputs: Mapping[str, Any]) -> None:
        """Write the files of ``outputs`` (a finished run's) again, as the incident is now."""
        folder = outputs.get("directory")
        formats = outputs.get("formats")
        if formats is None:  # a record written before formats were kept
            formats = [Path(str(p)).suffix.lstrip(".") for p in outputs.get("paths") or ()]
        formats = [f for f in formats if f in FORMATS]
        if folder and formats:
            self._write(ctx, Path(str(folder)), formats)

    @staticmethod
    def _write(ctx: ActionContext, folder: Path, formats: list[str]) -> list[str]:
        extra = ctx.services.get("report_evidence")
        if callable(extra):
            extra = extra(ctx.incident_id)
        incident = ctx.recorder.get_incident(ctx.incident_id)
        steps = ctx.recorder.get_steps(ctx.incident_id)
        paths = []
        for fmt in formats:
            path = folder / f"incident-{ctx.incident_id}.{fmt}"
            atomic_write(
                path, render_report(incident, steps, ctx.playbook, extra, fmt).encode("utf-8")
            )
            paths.append(str(path))
        return paths

"""`assay playbook ...` and `assay incident ...`: run incident playbooks, resumable and audited."""

from __future__ import annotations

from pathlib import Path

import click

from assay.cli.common import esc, new_output_option, open_registry, yes_option
from assay.cli.context import AppContext, json_option, new_table


@click.group("playbook")
def playbook() -> None:
    """List, show and validate incident playbooks."""


@playbook.command("list")
@json_option
@click.pass_obj
def playbook_list(app: AppContext, as_json: bool) -> None:
    """The built-in playbooks."""
    from assay.incident.playbook import builtin_playbooks, parse_playbook
    from assay.incident.service import playbook_source

    books = [parse_playbook(*playbook_source(pid)) for pid in builtin_playbooks()]
    rows = [
        {"id": b.id, "severity": b.severity, "threats": b.threats, "description": b.description}
        for b in books
    ]

    def render(console):
        table = new_table(console, "id", "severity", "threats", "description")
        for r in rows:
            first = r["description"].strip().split(". ")[0].rstrip(".") + "."
            table.add_row(r["id"], r["severity"], ", ".join(r["threats"]), first)
        console.print(table)

    app.emit(rows, as_json, render)


@playbook.command("show")
@click.argument("ref", metavar="ID|FILE")
@click.pass_obj
def playbook_show(app: AppContext, ref: str) -> None:
    """Print a playbook's YAML."""
    from assay.incident.service import playbook_source

    click.echo(playbook_source(ref)[0], nl=False)


@playbook.command("validate")
@click.argument("ref", metavar="FILE|ID")
@click.pass_obj
def playbook_validate(app: AppContext, ref: str) -> None:
    """Check a playbook (actions, parameters, templates, inputs, cycles) without running it.

    Errors name the file, the line and the step; exit 1 when invalid.
    """
    from assay.incident.actions import spec_actions
    from assay.incident.playbook import PlaybookError, parse_playbook
    from assay.incident.service import playbook_source

    text, label = playbook_source(ref)
    try:
        book = parse_playbook(text, label, spec_actions())
    except PlaybookError as exc:
        for line in exc.errors[1:]:
            click.echo(line, err=True)
        raise
    click.echo(f"{label}: playbook {book.id!r} is valid ({len(book.steps)} steps)")


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    inputs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        inputs[key.strip()] = value
    return inputs


def _approver(app: AppContext, yes: bool):
    if yes or not app.interactive:
        return None

    def approve(step, message: str) -> bool:
        return click.confirm(f"step {step.id!r}: {message} Proceed?", default=False)

    return approve


def _render_result(app: AppContext, result, as_json: bool) -> None:
    data = {
        "incident_id": result.incident_id,
        "playbook": result.playbook_id,
        "status": result.status,
        "detail": result.detail,
        "waiting_step": result.waiting_step,
        "steps": [s.to_dict() for s in result.steps],
        "plan": [p.__dict__ for p in result.plan],
    }

    def render(console):
        if result.plan and not result.steps:
            table = new_table(
                console,
                "step",
                "action",
                "what it would do",
                title=f"plan: {esc(result.playbook_id)} (dry run, nothing changed)",
            )
            for p in result.plan:
                what = p.description + (
                    "" if p.will_run is not False else "  [skipped: condition false]"
                )
                if p.approval:
                    what += f"  [needs approval: {p.approval}]"
                table.add_row(p.step_id, p.action, what)
            console.print(table)
            return
        table = new_table(
            console,
            "step",
            "item",
            "status",
            "summary / error",
            title=f"incident {esc(result.incident_id)}: {esc(result.playbook_id)}",
        )
        for s in result.steps:
            summary = (s.outputs or {}).get("summary") if s.outputs else None
            table.add_row(
                s.step_id,
                "" if s.item_index is None else str(s.item_index),
                s.status,
                s.error or summary or "",
            )
        console.print(table)
        detail = f" ({esc(result.detail)})" if result.detail else ""
        console.print(f"status: {esc(result.status)}{detail}")
        if result.status == "waiting-approval":
            console.print(f"resume with: assay incident resume {esc(result.incident_id)} --yes")
        elif result.status == "failed":
            console.print(f"fix the cause, then: assay incident resume {esc(result.incident_id)}")

    app.emit(data, as_json, render)


@click.group("incident")
def incident() -> None:
    """Run incident playbooks; every step is recorded and resumable."""


@incident.command("run")
@click.argument("playbook_ref", metavar="PLAYBOOK")
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="A playbook input (repeatable)."
)
@click.option(
    "--dry-run", is_flag=True, help="Validate and show the plan; change and record nothing."
)
@yes_option()
@json_option
@click.pass_obj
def incident_run(
    app: AppContext,
    playbook_ref: str,
    sets: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Run PLAYBOOK (a built-in id or a YAML file) as a new incident.

    Exit 1 when a step fails (resume after fixing it); an approval gate without --yes on a
    non-terminal stops the incident in waiting-approval (resume with --yes).
    """
    from assay.core.errors import AssayError
    from assay.incident import service as incidents

    registry = open_registry(app)
    result = incidents.run(
        registry,
        playbook_ref,
        _parse_sets(sets),
        dry_run=dry_run,
        assume_yes=yes,
        approve=_approver(app, yes),
    )
    _render_result(app, result, as_json)
    if result.status == "failed":
        raise AssayError(f"incident {result.incident_id} failed: {result.detail}")


@incident.command("resume")
@click.argument("incident_id")
@yes_option()
@json_option
@click.pass_obj
def incident_resume(app: AppContext, incident_id: str, yes: bool, as_json: bool) -> None:
    """Continue INCIDENT_ID from its first unfinished step."""
    from assay.core.errors import AssayError
    from assay.incident import service as incidents

    result = incidents.resume(
        open_registry(app), incident_id, assume_yes=yes, approve=_approver(app, yes)
    )
    _render_result(app, result, as_json)
    if result.status == "failed":
        raise AssayError(f"incident {result.incident_id} failed: {result.detail}")


@incident.command("list")
@json_option
@click.pass_obj
def incident_list(app: AppContext, as_json: bool) -> None:
    """Every incident, oldest first."""
    from assay.incident import service as incidents

    rows = [i.to_dict() for i in incidents.list_incidents(open_registry(app))]

    def render(console):
        table = new_table(console, "id", "playbook", "status", "created", "detail")
        for r in rows:
            table.add_row(
                r["id"], r["playbook_id"], r["status"], r["created_at"], r["detail"] or ""
            )
        console.print(table)

    app.emit(rows, as_json, render)


@incident.command("show")
@click.argument("incident_id")
@json_option
@click.pass_obj
def incident_show(app: AppContext, incident_id: str, as_json: bool) -> None:
    """An incident's inputs and every recorded step."""
    from assay.incident import service as incidents

    record, steps = incidents.show(open_registry(app), incident_id)

    def render(console):
        console.print(
            f"incident {esc(record.id)}: {esc(record.playbook_id)}, {esc(record.status)}"
            + (f" ({esc(record.detail)})" if record.detail else "")
        )
        console.print(f"inputs: {esc(record.inputs)}")
        table = new_table(console, "step", "item", "status", "finished", "error")
        for s in steps:
            table.add_row(
                s.step_id,
                "" if s.item_index is None else str(s.item_index),
                s.status,
                s.finished_at or "",
                s.error or "",
            )
        console.print(table)

    app.emit({"incident": record.to_dict(), "steps": [s.to_dict() for s in steps]}, as_json, render)


@incident.command("report")
@click.argument("incident_id")
@click.option(
    "--format", "fmt", type=click.Choice(["md", "json", "html"]), default="md", show_default=True
)
@new_output_option()
@click.pass_obj
def incident_report(app: AppContext, incident_id: str, fmt: str, output: Path | None) -> None:
    """The incident report: timeline, changes, evidence, threat ids."""
    from assay.core.atomic import write_new_file
    from assay.incident import service as incidents

    text = incidents.report(open_registry(app), incident_id, fmt)
    if output:
        write_new_file(output, text.encode("utf-8"))
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)

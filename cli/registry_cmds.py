"""`assay mark`, `promote`, `freeze`, `unfreeze`, `status` and `lineage`: states and serving."""

from __future__ import annotations

import json
from pathlib import Path

import click

from assay.cli.common import (
    esc,
    incident_option,
    new_output_option,
    open_registry,
    reason_option,
    short,
    styled,
)
from assay.cli.context import AppContext, json_option, new_table
from assay.core.drift import describe_drift_kinds
from assay.core.states import BAD_STATES, STATES

# assay.core.states has no third-party import: `assay --help` stays fast.
STATE_CHOICES = STATES


def _state_style(state: str) -> str:
    """The state as markup (green when known-good, red when bad); a table cell needs styled()."""
    if state == "known-good":
        return f"[green]{esc(state)}[/green]"
    if state in BAD_STATES:
        return f"[red]{esc(state)}[/red]"
    return esc(state)


@click.command("mark")
@click.argument("name")
@click.argument("version")
@click.argument("state", type=click.Choice(STATE_CHOICES))
@reason_option("Why (recorded in the history and audit log).", required=True)
@incident_option("change")
@click.option(
    "--force",
    is_flag=True,
    help="known-good without the policy's passing gate results (recorded with --reason).",
)
@json_option
@click.pass_obj
def mark_cmd(
    app: AppContext,
    name: str,
    version: str,
    state: str,
    reason: str,
    incident_id: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Set the STATE of model NAME's VERSION (dataset:NAME for a dataset version).

    known-good needs clean lineage (no quarantined or compromised dataset or parent) and a
    verification that passes now: the bytes are re-read from the artifact store (exit 3 if they
    do not verify), and passing `assay gate run` results for those bytes of every gate the
    policy's gates: section requires of the model (--force --reason overrides only the gates,
    and is recorded). quarantined and compromised are always accepted. Every change is kept in the
    version's history and the audit log, and mirrored to the assay.state tag in MLflow.
    """
    from assay.core.refs import split_subject
    from assay.registry.states import mark

    kind, bare = split_subject(name)
    record = mark(
        open_registry(app),
        bare,
        version,
        state,
        reason=reason,
        incident_id=incident_id,
        kind=kind,
        force=force,
    )
    app.emit(
        record.to_dict(),
        as_json,
        lambda c: c.print(
            f"{esc(record.ref)}: {_state_style(record.state)} ({esc(record.reason)})"
        ),
    )


@click.command("label")
@click.argument("name")
@click.argument("version")
@click.option("--add", "add", multiple=True, metavar="LABEL", help="Label to add (repeatable).")
@click.option(
    "--remove", "remove", multiple=True, metavar="LABEL", help="Label to remove (repeatable)."
)
@click.option("--reason", help="Evidence for the label (recorded in the audit log).")
@json_option
@click.pass_obj
def label_cmd(
    app: AppContext,
    name: str,
    version: str,
    add: tuple[str, ...],
    remove: tuple[str, ...],
    reason: str | None,
    as_json: bool,
) -> None:
    """Add or remove labels on model NAME's VERSION, e.g. --add robust after adversarial evaluation.

    Labels are audited claims, not states: the adversarial-evasion playbook rolls back only to a
    known-good version labelled robust. Mirrored to the assay.labels tag in MLflow.
    """
    from assay.core.refs import model_name
    from assay.registry.labels import set_labels

    if not add and not remove:
        raise click.UsageError("give --add LABEL and/or --remove LABEL")
    record = set_labels(
        open_registry(app),
        model_name(name),
        version,
        add=add,
        remove=remove,
        reason=reason,
    )
    app.emit(
        record.to_dict(),
        as_json,
        lambda c: c.print(f"{esc(record.ref)}: labels {esc(', '.join(record.labels) or '(none)')}"),
    )


@click.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--alias", default="production", show_default=True, help="The serving alias.")
@click.option(
    "--force", is_flag=True, help="Override the known-good, lineage and verification checks."
)
@reason_option("Why (required with --force; recorded with the move).")
@incident_option("move")
@json_option
@click.pass_obj
def promote_cmd(
    app: AppContext,
    name: str,
    version: str,
    alias: str,
    force: bool,
    reason: str | None,
    incident_id: str | None,
    as_json: bool,
) -> None:
    """Point model NAME's ALIAS at VERSION.

    Refused unless VERSION is known-good, its lineage is clean (no quarantined or compromised
    dataset or parent) and it verifies now (its bytes are re-read; exit 3 if they do not
    verify). --force --reason R overrides these checks and is recorded. Nothing overrides a
    freeze: while a model is frozen only `assay rollback` moves its aliases.
    Re-running after an interruption finishes the move and never moves the alias twice.
    """
    from assay.registry.states import promote

    if force and not (reason and reason.strip()):
        raise click.UsageError("--force needs --reason R (a forced promotion is recorded)")
    result = promote(
        open_registry(app),
        name,
        version,
        alias=alias,
        force=force,
        reason=reason,
        incident_id=incident_id,
    )

    def render(console):
        if result.moved or result.resumed:
            verb = "moved"
        elif result.recorded:
            verb = "recorded"
        else:
            verb = "already at"
        console.print(
            f"{esc(name)}@{esc(alias)}: {verb} {esc(result.to_version)} "
            f"(was {esc(result.from_version or 'unset')})"
        )
        if result.forced:
            console.print(f"[yellow]forced[/yellow]: {esc(result.reason or '')}")
            if not result.verified:
                console.print(f"[red]{esc(result.verify_summary or '')}[/red]")
        if result.note:
            console.print(esc(result.note))

    app.emit(result.to_dict(), as_json, render)


@click.command("freeze")
@click.argument("name")
@reason_option("Why (recorded; shown to anyone refused).", required=True)
@incident_option("freeze")
@json_option
@click.pass_obj
def freeze_cmd(
    app: AppContext, name: str, reason: str, incident_id: str | None, as_json: bool
) -> None:
    """Freeze model NAME: promotions and alias moves other than rollback are refused.

    --force on promote does not bypass a freeze; `assay unfreeze NAME` lifts it.
    """
    from assay.registry.states import freeze

    result = freeze(open_registry(app), name, reason=reason, incident_id=incident_id)
    verb = "frozen" if result.changed else "already frozen"
    app.emit(
        result.to_dict(),
        as_json,
        lambda c: c.print(f"{esc(name)}: {verb} ({esc(result.reason or '')})"),
    )


@click.command("unfreeze")
@click.argument("name")
@reason_option("Why (recorded).")
@json_option
@click.pass_obj
def unfreeze_cmd(app: AppContext, name: str, reason: str | None, as_json: bool) -> None:
    """Lift the freeze on model NAME."""
    from assay.registry.states import unfreeze

    result = unfreeze(open_registry(app), name, reason=reason)
    verb = "unfrozen" if result.changed else "was not frozen"
    app.emit(result.to_dict(), as_json, lambda c: c.print(f"{esc(name)}: {verb}"))


def _gates_cell(gates: dict[str, str]) -> str:
    """``3 passed``, or the gates that did not pass first: ``label-issues failed, 2 passed``."""
    bad = [f"{g} {s}" for g, s in gates.items() if s != "passed"]
    good = len(gates) - len(bad)
    return ", ".join(bad + ([f"{good} passed"] if good else []))


def _render_status(console, report) -> None:
    from assay.registry.versions import version_key  # loaded with assay.registry.status

    for model in report.models:
        title = esc(model.name)
        if model.frozen:
            title += f" [red](frozen: {esc(model.frozen['reason'])})[/red]"
        if model.aliases:
            title += "  " + ", ".join(f"{esc(a)}->{esc(v)}" for a, v in model.aliases.items())
        table = new_table(
            console,
            "version",
            "state",
            "serving",
            "signer",
            "manifest",
            "datasets",
            "parents",
            "gates",
            title=title,
            title_justify="left",
        )
        rows = []
        for vs in model.versions:
            r = vs.record
            state = _state_style(r.state)
            if r.status != "complete":
                state += f" [yellow]({esc(r.status)})[/yellow]"
            if vs.verified is False:
                state += " [red]bytes changed[/red]"
            rows.append(
                (
                    r.version,
                    styled(state),
                    ", ".join(vs.aliases),
                    short(r.key_id),
                    short(r.manifest_root),
                    ", ".join(r.datasets),
                    ", ".join(r.parents),
                    _gates_cell(vs.gates),
                )
            )
        serving = {}
        for alias, version in model.aliases.items():
            serving.setdefault(version, []).append(alias)
        for version in model.pending:  # in MLflow only, never recorded: it cannot load
            state = styled("[yellow]pending-registration[/yellow]")
            rows.append((version, state, ", ".join(serving.get(version, [])), "", "", "", "", ""))
        for row in sorted(rows, key=lambda row: version_key(row[0])):
            table.add_row(*row)
        console.print(table)
    if report.datasets:
        table = new_table(
            console, "dataset", "version", "state", "signer", "manifest", title="datasets"
        )
        for r in report.datasets:
            table.add_row(
                r.name,
                r.version,
                styled(_state_style(r.state)),
                short(r.key_id),
                short(r.manifest_root),
            )
        console.print(table)
    if report.drift:
        table = new_table(
            console, "drift", "model", "version", "detail", style="red", header_style="bold red"
        )
        for d in report.drift:
            table.add_row(d.kind.value, d.model or "", d.version or "", d.detail)
        console.print(table)
        console.print(f"[bold red]{esc(report.summary())}[/bold red]")
    else:
        console.print(f"[green]{esc(report.summary())}[/green]")


def _listed(findings, what: str) -> str:
    shown = ", ".join(f"{d.model}/{d.version}" if d.version else str(d.model) for d in findings[:5])
    more = f" and {len(findings) - 5} more" if len(findings) > 5 else ""
    return f"{len(findings)} {what}: {shown}{more}"


STATUS_HELP = f"""Versions, states, serving aliases, signers and lineage of NAME (or of every model),
and drift between assay's store and MLflow.

\b
Drift findings:
{describe_drift_kinds()}

\b
Exit codes: 0 even when there is drift (the last line summarises it), unless
--fail-on-drift: then 3 when there is any finding; 3 with --deep when any
version's bytes no longer verify.
"""


@click.command("status", help=STATUS_HELP)
@click.argument("name", required=False)
@click.option("--deep", is_flag=True, help="Also re-read and verify every version's bytes.")
@click.option(
    "--fail-on-drift",
    is_flag=True,
    help="Exit 3 when there is any drift finding (for CI and monitoring).",
)
@json_option
@click.pass_obj
def status_cmd(
    app: AppContext, name: str | None, deep: bool, fail_on_drift: bool, as_json: bool
) -> None:
    from assay.core.errors import IntegrityError
    from assay.registry.status import status

    report = status(open_registry(app), name, deep=deep)
    app.emit(report.to_dict(), as_json, lambda c: _render_status(c, report))
    failures = report.integrity_failures
    if failures:
        raise IntegrityError(_listed(failures, "version(s) no longer verify"))
    if fail_on_drift and report.drift:
        kinds = sorted({d.kind.value for d in report.drift})
        raise IntegrityError(
            _listed(report.drift, f"drift finding(s) ({', '.join(kinds)})") + " (--fail-on-drift)"
        )


def _short(record) -> str:
    if record.kind == "model":
        return f"{record.name}/{record.version}"
    return f"dataset {record.name}@{record.version}"


def _render_lineage(console, report) -> None:
    subject = report.subject
    aliases = esc(", ".join(report.subject_aliases))
    serving = f" (serving: {aliases})" if report.subject_aliases else ""
    console.print(f"{esc(subject.ref)}: {_state_style(subject.state)}{serving}")
    for title, entries in (
        ("made from (upstream)", report.upstream),
        ("derived from it (downstream)", report.downstream),
    ):
        if not entries:
            continue
        table = new_table(console, title=title, title_justify="left")
        table.add_column("version")
        table.add_column("state")
        table.add_column("depth", justify="right")
        table.add_column("relation")
        table.add_column("via")
        table.add_column("serving")
        for e in entries:
            table.add_row(
                _short(e.record),
                styled(_state_style(e.record.state)),
                str(e.depth),
                e.relation,
                e.via.removeprefix("models:/"),
                ", ".join(e.aliases),
            )
        console.print(table)
    console.print(esc(report.summary()))


@click.command("lineage")
@click.argument("ref", metavar="REF")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "svg"]),
    default="text",
    show_default=True,
    help="svg: the blast radius as a picture (datasets -> versions -> serving aliases).",
)
@new_output_option()
@json_option
@click.pass_obj
def lineage_cmd(app: AppContext, ref: str, fmt: str, output: Path | None, as_json: bool) -> None:
    """Lineage of REF: dataset:NAME@V or models:/NAME/V (or models:/NAME@ALIAS).

    For a dataset version: every model version trained on it, transitively through fine-tuned
    children, with the aliases serving each: the blast radius if it was poisoned. For a model
    version: its datasets and parents upward, and what was fine-tuned from it downward.
    --format svg draws it as a self-contained SVG (affected versions and aliases in red).
    """
    from assay.registry.lineage import lineage

    if as_json:
        fmt = "json"
    if fmt == "text" and output is not None:
        raise click.UsageError("-o needs --format svg or --format json")
    report = lineage(open_registry(app), ref)
    if fmt == "text":
        app.emit(report.to_dict(), False, lambda c: _render_lineage(c, report))
        return
    if fmt == "svg":
        from assay.registry.lineage_svg import lineage_svg

        text = lineage_svg(report.to_dict())
    else:
        text = json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    from assay.core.atomic import write_new_file

    write_new_file(output, text.encode("utf-8"))
    click.echo(f"wrote {output}", err=True)


#: The commands this module adds to the ``assay`` group.
COMMANDS = (mark_cmd, label_cmd, promote_cmd, freeze_cmd, unfreeze_cmd, status_cmd, lineage_cmd)

"""`assay audit ...`: read, checkpoint and verify the tamper-evident audit log."""

from __future__ import annotations

from pathlib import Path

import click

from assay.cli.common import esc, open_registry, short
from assay.cli.context import AppContext, json_option, new_table


@click.group("audit")
def audit() -> None:
    """The append-only audit log (an RFC 9162 Merkle tree with signed checkpoints)."""


@audit.command("log")
@click.option(
    "--limit", type=int, default=50, show_default=True, help="Show the newest N events (0: all)."
)
@json_option
@click.pass_obj
def log(app: AppContext, limit: int, as_json: bool) -> None:
    """List audit events, newest last."""
    from assay.registry.fast_read import audit_events

    events = audit_events(app.settings, limit=limit or None)

    def render(console):
        table = new_table(console, "seq", "time", "actor", "action", "subject")
        for e in events:
            table.add_row(str(e["seq"]), e["ts"], e["actor"], e["action"], e["subject"])
        console.print(table)

    app.emit(events, as_json, render)


@audit.command("checkpoint")
@click.option("--key", "key_ref", help="Signing key (default: ASSAY_KEY, else the default key).")
@json_option
@click.pass_obj
def checkpoint(app: AppContext, key_ref: str | None, as_json: bool) -> None:
    """Sign the log's current size and root into $ASSAY_HOME/checkpoints/."""
    result = open_registry(app).audit_checkpoint(key=key_ref)
    app.emit(
        result,
        as_json,
        lambda c: c.print(
            f"checkpoint of {result['tree_size']} events, root {short(result['root_hash'], 16)} "
            f"-> {esc(result['path'])}"
        ),
    )


@audit.command("verify")
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A checkpoint file to verify against (repeatable; default: every file in $ASSAY_HOME/checkpoints).",
)
@json_option
@click.pass_obj
def verify(app: AppContext, checkpoints: tuple[Path, ...], as_json: bool) -> None:
    """Check every entry, and consistency with each signed checkpoint (exit 3 on tampering)."""
    report = open_registry(app).audit_verify(list(checkpoints) or None)

    def render(console):
        if report.ok:
            console.print(
                f"[green]OK[/green] audit log of {report.tree_size} events verifies against "
                f"{report.checked_checkpoints} checkpoint(s)"
            )
        else:
            console.print(f"[red]FAILED[/red] audit log ({report.tree_size} events)")
            for problem in report.problems:
                console.print(f"  {esc(problem)}")

    app.emit(report.to_dict(), as_json, render)
    report.raise_for_failure()

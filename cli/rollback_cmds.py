"""`assay rollback`: move a serving alias back to the newest safe version."""

from __future__ import annotations

import click

from assay.cli.common import esc, open_registry, yes_option
from assay.cli.context import AppContext, json_option, new_table


def render_plan(console, plan) -> None:
    table = new_table(
        console,
        "version",
        "state",
        "eligible",
        "why not",
        title=f"{esc(plan.model)}@{esc(plan.alias)}: candidates, newest first",
    )
    for c in plan.candidates:
        table.add_row(c.version, c.state, "yes" if c.eligible else "no", "; ".join(c.reasons))
    console.print(table)


@click.command("rollback")
@click.argument("name")
@click.option("--alias", default="production", show_default=True, help="The serving alias to move.")
@click.option("--to", "to_version", help="Roll back to this version instead of choosing one.")
@click.option("--reason", help="Why (recorded; the replaced version is quarantined with it).")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@yes_option("Do not ask for confirmation (for scripts).")
@json_option
@click.pass_obj
def rollback_cmd(
    app: AppContext,
    name: str,
    alias: str,
    to_version: str | None,
    reason: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Roll NAME's serving ALIAS back to the newest version that is safe to serve.

    Without --to the target is the newest version older than the serving one that is
    known-good, not quarantined or compromised, has clean lineage, and verifies now. The
    replaced version is quarantined (one never registered through assay cannot be, and the
    output says so). Re-running after a crash finishes the same rollback and never moves the
    alias twice. Frozen models can still be rolled back.
    """
    from assay.rollback.execute import NoRollbackTarget, rollback

    registry = open_registry(app)
    reason = reason or "manual rollback"

    def confirm(plan) -> bool:
        if yes or as_json:
            return True
        if not app.interactive:
            raise click.UsageError("not a terminal: pass --yes to roll back without confirmation")
        render_plan(app.console, plan)
        return click.confirm(
            f"Move {name}@{alias} from {plan.current} to {plan.target}?", default=False
        )

    try:
        result = rollback(
            registry,
            name,
            alias=alias,
            to=to_version,
            reason=reason,
            dry_run=dry_run,
            confirm=confirm,
        )
    except NoRollbackTarget as exc:
        if as_json:
            app.emit({"ok": False, "plan": exc.plan.to_dict()}, True, render_plan)
        else:
            render_plan(app.err_console, exc.plan)
        raise

    def render(console):
        if result.dry_run:
            from assay.rollback.selection import Candidate, RollbackPlan

            plan = RollbackPlan(
                **{**result.plan, "candidates": [Candidate(**c) for c in result.plan["candidates"]]}
            )
            render_plan(console, plan)
            console.print(
                f"dry run: would move {esc(name)}@{esc(alias)} from {esc(result.from_version)} "
                f"to {esc(result.to_version)}"
            )
            return
        if result.note:
            console.print(esc(result.note))
            return
        verb = "moved" if result.moved else "already at"
        console.print(
            f"{esc(name)}@{esc(alias)}: {verb} {esc(result.to_version)} "
            f"(was {esc(result.from_version)})"
        )
        if result.quarantined:
            console.print(f"version {esc(result.quarantined)} quarantined: {esc(reason)}")
        if result.not_quarantined:
            console.print(esc(result.not_quarantined))
        if result.resumed:
            console.print("(finished a rollback that had been interrupted)")

    app.emit(result.to_dict(), as_json, render)

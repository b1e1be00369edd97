"""`assay gate run / show / list`: measured pre-deployment checks, recorded as signed evidence."""

from __future__ import annotations

import click

from assay.cli.common import open_registry
from assay.cli.context import AppContext, json_option


@click.group("gate")
def gate() -> None:
    """Measured checks (robustness, privacy, label issues, backdoors, pickles) on a version.

    Each result is a signed statement over the version's bytes; the policy's gates: section
    names those `assay mark NAME V known-good` requires.
    """


def _render_results(console, results) -> None:
    from rich.markup import escape

    styles = {"passed": "green", "failed": "red", "error": "yellow"}
    for r in results:
        style = styles.get(r["status"], "white")
        console.print(
            f"[{style}]{r['status']:6}[/{style}] {escape(r['gate'])}: {escape(r['detail'])}"
        )


@gate.command("run")
@click.argument("model")
@click.option(
    "--gate",
    "gates",
    multiple=True,
    metavar="NAME",
    help="Gate to run (repeatable; default: those the policy requires of the model).",
)
@click.option(
    "--data",
    metavar="dataset:NAME@V",
    help="Dataset to measure with (default: the version's one trained-on dataset).",
)
@click.option(
    "--label-column", default="label", show_default=True, help="The dataset's label column."
)
@json_option
@click.pass_obj
def run_cmd(
    app: AppContext,
    model: str,
    gates: tuple[str, ...],
    data: str | None,
    label_column: str,
    as_json: bool,
) -> None:
    """Run gates on MODEL (models:/NAME/V or models:/NAME@ALIAS) and record each result.

    The version's files are downloaded and verified first (exit 3 if they do not verify); a
    gate that fails, cannot run on the model or raises is recorded as failed or error, never
    as passed. Exit 0 when every gate passed, 1 otherwise.
    """
    from assay.gates.runner import run_gates

    result = run_gates(open_registry(app), model, list(gates), data=data, label_column=label_column)
    doc = result.to_dict()
    app.emit(doc, as_json, lambda c: _render_results(c, doc["results"]))
    if not result.passed:
        bad = [f"{r.gate} {r.status}" for r in result.results if not r.passed]
        click.echo(
            f"error: {len(bad)} of {len(result.results)} gate(s) did not pass: {', '.join(bad)}",
            err=True,
        )
        raise SystemExit(1)


@gate.command("show")
@click.argument("model")
@json_option
@click.pass_obj
def show_cmd(app: AppContext, model: str, as_json: bool) -> None:
    """The newest verifying result of each gate for MODEL's bytes, and what known-good lacks."""
    from assay.gates.runner import version_gates
    from assay.registry.uri_verify import resolve_model_version

    registry = open_registry(app)
    name, version = resolve_model_version(registry, model)
    doc = {"subject": f"models:/{name}/{version}", **version_gates(registry, name, version)}

    def render(console) -> None:
        from rich.markup import escape

        _render_results(console, doc["results"])
        if not doc["results"]:
            console.print("no gate results for these bytes")
        for line in doc["missing_for_known_good"]:
            console.print(f"known-good still needs: {escape(line)}")

    app.emit(doc, as_json, render)


@gate.command("list")
@json_option
@click.pass_obj
def list_cmd(app: AppContext, as_json: bool) -> None:
    """The gates installed (built-in and plugins of the assay.gates entry-point group)."""
    from assay.gates.plugins import available

    names = available()
    app.emit({"gates": names}, as_json, lambda c: c.print("\n".join(names), markup=False))


@click.command("bom")
@click.argument("model")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["cyclonedx-json"]),
    default="cyclonedx-json",
    show_default=True,
    help="BOM format.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the BOM here.")
@click.option(
    "--provenance",
    type=click.Path(dir_okay=False),
    help="Write the signed in-toto/SLSA provenance (DSSE envelope) here.",
)
@json_option
@click.pass_obj
def bom_cmd(
    app: AppContext,
    model: str,
    fmt: str,
    output: str | None,
    provenance: str | None,
    as_json: bool,
) -> None:
    """A CycloneDX 1.6 ML-BOM of MODEL (models:/NAME/V): model card with datasets, lineage,
    signatures, gate evidence and watermark fingerprint; and an in-toto/SLSA provenance
    statement over its bytes, signed by assay's key. Without -o the BOM goes to stdout;
    --json prints both."""
    import json
    from pathlib import Path

    from assay.core.atomic import atomic_write
    from assay.gates.bom import build_bom

    result = build_bom(open_registry(app), model)
    text = json.dumps(result.bom, indent=2, sort_keys=True) + "\n"
    if output:
        atomic_write(Path(output), text.encode("utf-8"))
    if provenance:
        atomic_write(Path(provenance), result.provenance.encode("utf-8"))
    if as_json:
        app.emit(result.to_dict(), True, lambda c: None)
    elif not output:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {output}" + (f" and {provenance}" if provenance else ""))

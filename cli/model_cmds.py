"""`assay register` and `assay dataset ...`: put models and datasets under assay's control."""

from __future__ import annotations

from pathlib import Path

import click

from assay.cli.common import esc, open_registry, short, sigterm_unwinds
from assay.cli.context import AppContext, json_option, new_table
from assay.cli.progress import byte_progress


@click.command("register")
@click.argument("name")
@click.argument("source")
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    metavar="NAME@V",
    help="A dataset version it was trained on (repeatable).",
)
@click.option(
    "--parent",
    "parents",
    multiple=True,
    metavar="NAME/V",
    help="The model version it was fine-tuned from (repeatable).",
)
@click.option("--alias", help="Point this alias at the new version once it is recorded.")
@click.option(
    "--no-watermark",
    is_flag=True,
    help="Do not embed an ownership watermark (a model without weight files gets none anyway).",
)
@click.option(
    "--watermark-strength", type=float, help="Watermark strength (fraction of each tensor's std)."
)
@json_option
@click.pass_obj
def register(
    app: AppContext,
    name: str,
    source: str,
    datasets: tuple[str, ...],
    parents: tuple[str, ...],
    alias: str | None,
    no_watermark: bool,
    watermark_strength: float | None,
    as_json: bool,
) -> None:
    """Register SOURCE as a new version of model NAME.

    SOURCE is a local folder or file, a runs:/ URI or an MLflow logged model (models:/m-...).
    The weight files (safetensors, torch, ONNX) are watermarked; a model with none (e.g.
    scikit-learn) is signed without a watermark ("watermark: none (no weight tensors)"), and a
    weight file that does not parse fails the registration. The bytes are then signed, logged
    to MLflow and recorded with their lineage. Re-running an interrupted registration finishes it.
    """
    from assay.core.refs import parse_dataset_ref, parse_model_ref
    from assay.registry.registration import register_model

    registry = open_registry(app)
    with (
        sigterm_unwinds(f"registration of {name}"),
        byte_progress(f"registering {name}", enabled=None if not as_json else False) as advance,
    ):
        result = register_model(
            registry,
            name,
            source,
            datasets=[parse_dataset_ref(d, require_version=False) for d in datasets],
            parents=[parse_model_ref(p) for p in parents],
            alias=alias,
            watermark=not no_watermark,
            watermark_strength=watermark_strength,
            progress=advance,
        )

    def render(console):
        verb = "already registered as" if result.reused else "registered"
        console.print(
            f"{verb} {esc(result.uri)} (manifest {short(result.manifest_root)}, "
            f"key {short(result.key_id)})"
        )
        if result.datasets:
            console.print(f"  trained on: {esc(', '.join(result.datasets))}")
        if result.parents:
            console.print(f"  fine-tuned from: {esc(', '.join(result.parents))}")
        if result.watermark and "tensors" in result.watermark:
            console.print(f"  watermark: {result.watermark['tensors']} tensors marked")
        elif result.watermark:  # a re-run: the store keeps the fingerprint, not the count
            console.print(
                f"  watermark: secret {short(result.watermark.get('secret_fingerprint'))}"
            )
        elif result.watermark_note:
            console.print(f"  watermark: {result.watermark_note}")
        if result.alias:
            console.print(f"  alias {esc(result.alias)} -> {esc(result.version)}")

    app.emit(result.to_dict(), as_json, render)


@click.group("dataset")
def dataset() -> None:
    """Register, list, show and scan dataset versions."""


_ON_FINDING = click.option(
    "--on-finding",
    type=click.Choice(["report", "fail", "incident"]),
    default="report",
    show_default=True,
    help="When the scan is above the policy's thresholds: only report it (exit 0), fail "
    "(exit 3), or open a data-poisoning incident on the version (exit 3).",
)


def _open_incident(registry, scan, doc: dict, mode: str) -> None:
    """With --on-finding incident and a finding: start the data-poisoning playbook."""
    if scan.findings and mode == "incident":
        from assay.gates.dataset_scan import open_incident

        result = open_incident(registry, scan)
        doc["incident"] = {"incident_id": result.incident_id, "status": result.status}


def _finding_exit(scan, doc: dict, mode: str) -> None:
    """After the scan is shown: exit 3 on a finding unless --on-finding report."""
    if not scan.findings or mode == "report":
        return
    if "incident" in doc:
        incident = doc["incident"]
        click.echo(
            f"incident {incident['incident_id']} (data-poisoning): {incident['status']}", err=True
        )
    click.echo(f"error: {scan.subject}: {'; '.join(scan.findings)}", err=True)
    raise SystemExit(3)


@dataset.command("register")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--scan", is_flag=True, help="Scan the data (see `dataset scan`) and record it.")
@click.option("--label-column", default="label", show_default=True, help="Label column (--scan).")
@_ON_FINDING
@json_option
@click.pass_obj
def dataset_register(
    app: AppContext,
    name: str,
    path: Path,
    scan: bool,
    label_column: str,
    on_finding: str,
    as_json: bool,
) -> None:
    """Hash, sign and store PATH as the next version of dataset NAME.

    With --scan the data is read first (nothing is registered if it is not a table with the
    label column nor an image folder), then the stored, verified copy is scanned and the scan
    recorded; --on-finding says what a scan above the policy's thresholds does.
    """
    from assay.registry.datasets import register_dataset

    registry = open_registry(app)
    if scan:
        from assay.gates.tables import read_dataset

        read_dataset(path, label_column)
    with byte_progress(f"hashing {path.name}", enabled=None if not as_json else False) as advance:
        record = register_dataset(registry, name, path, progress=advance)
    doc = record.to_dict()
    result = None
    if scan:
        from assay.gates.dataset_scan import scan_dataset

        result = scan_dataset(registry, f"{record.name}@{record.version}", label_column)
        doc["scan"] = result.to_dict()

    def render(c) -> None:
        c.print(f"registered {esc(record.ref)} (manifest {short(record.manifest_root)})")
        if scan:
            _render_scan(c, doc["scan"])

    if result is not None:
        _open_incident(registry, result, doc["scan"], on_finding)
    app.emit(doc, as_json, render)
    if result is not None:
        _finding_exit(result, doc["scan"], on_finding)


def _render_scan(console, doc) -> None:
    console.print(
        f"{doc['subject']}: {doc['rows']} rows, label issues {doc['label_issue_rate']:.1%} "
        f"({len(doc['suspect_rows'])} suspect rows), {doc['duplicates']} duplicates "
        f"({doc['conflicting_duplicates']} with conflicting labels), "
        f"{doc['near_duplicates']} near-duplicates",
        markup=False,
    )
    shift = doc.get("shift")
    if shift and "error" not in shift:
        console.print(
            f"shift vs {shift['against']}: max KS {shift['max_ks']:.3f} "
            f"({shift['max_ks_column']}), label TVD {shift['label_tvd']:.3f}",
            markup=False,
        )
    for row in doc["suspect_rows"][:10]:
        where = f" ({row['file']})" if "file" in row else ""
        console.print(
            f"  row {row['row']}{where}: label {row['label']} score {row['score']:.3f}",
            markup=False,
        )
    for trig in doc.get("triggers", []):
        console.print(
            f"trigger: {trig['row_count']} rows labelled {trig['label']} with "
            f"{', '.join(trig['features'][:6])} at their maximum (label changes without it for "
            f"{trig['relabelled_share']:.0%})",
            markup=False,
        )
    for line in doc.get("findings", []):
        console.print(f"finding: {line}", markup=False)


@dataset.command("scan")
@click.argument("ref", metavar="dataset:NAME@V")
@click.option(
    "--label-column",
    required=True,
    help="The column holding the labels (an image folder: the name given to its folder labels).",
)
@_ON_FINDING
@json_option
@click.pass_obj
def dataset_scan(
    app: AppContext, ref: str, label_column: str, on_finding: str, as_json: bool
) -> None:
    """Label issues (cleanlab), duplicates, BadNets-style trigger rows and shift vs the previous
    version of a dataset version: a CSV/Parquet table or an image folder (CLASS/*.png, label =
    folder name, features = grey pixels). `suspect_rows` in --json lists every suspect row with
    its score. A scan above the policy's thresholds (gates: dataset:NAME: dataset-scan:
    max_issue_rate, max_trigger_rows) is a finding: see --on-finding."""
    from assay.gates.dataset_scan import scan_dataset

    registry = open_registry(app)
    scan = scan_dataset(registry, ref, label_column)
    doc = scan.to_dict()
    _open_incident(registry, scan, doc, on_finding)
    app.emit(doc, as_json, lambda c: _render_scan(c, doc))
    _finding_exit(scan, doc, on_finding)


def _render_versions(console, records) -> None:
    table = new_table(console, "name", "version", "state", "manifest", "signer", "created")
    for r in records:
        table.add_row(
            r.name,
            r.version,
            r.state,
            short(r.manifest_root),
            short(r.key_id),
            r.created_at.isoformat(timespec="seconds") if r.created_at else "",
        )
    console.print(table)


@dataset.command("list")
@click.argument("name", required=False)
@json_option
@click.pass_obj
def dataset_list(app: AppContext, name: str | None, as_json: bool) -> None:
    """List dataset versions (of NAME, or all)."""
    from assay.registry.fast_read import list_datasets

    records = list_datasets(app.settings, name)
    app.emit([r.to_dict() for r in records], as_json, lambda c: _render_versions(c, records))


@dataset.command("show")
@click.argument("ref", metavar="NAME[@V]")
@json_option
@click.pass_obj
def dataset_show(app: AppContext, ref: str, as_json: bool) -> None:
    """Show one dataset version (the newest when @V is left out)."""
    from assay.core.refs import parse_dataset_ref
    from assay.registry.fast_read import show_dataset

    record = show_dataset(app.settings, parse_dataset_ref(ref))

    def render(console):
        for key, value in record.to_dict().items():
            console.print(f"{key:14} {esc(value)}")

    app.emit(record.to_dict(), as_json, render)

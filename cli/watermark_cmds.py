"""`assay watermark embed|detect` and `assay trace`: ownership marks and suspect tracing."""

from __future__ import annotations

from pathlib import Path

import click

from assay.cli.common import esc, open_registry
from assay.cli.context import AppContext, json_option, new_table


@click.group("watermark")
def watermark() -> None:
    """Embed and detect ownership watermarks in model weights."""


@watermark.command("embed")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--key", help="Watermark secret by fingerprint prefix (default: the active secret).")
@click.option("--strength", type=float, help="Fraction of each tensor's std (default 0.01).")
@json_option
@click.pass_obj
def embed_cmd(
    app: AppContext,
    source: Path,
    output: Path,
    key: str | None,
    strength: float | None,
    as_json: bool,
) -> None:
    """Write a watermarked copy of the weight file SOURCE to OUTPUT (a new file), or of the
    model folder SOURCE (a sharded checkpoint with model.safetensors.index.json) to OUTPUT (a
    new folder).

    safetensors is marked tensor by tensor (one tensor in memory at a time); a folder is copied
    beside OUTPUT, marked shard by shard and renamed into place: a failure leaves no OUTPUT.
    """
    from assay.tracing.watermark_ops import embed_file

    result = embed_file(open_registry(app), source, output, key=key, strength=strength)
    app.emit(
        result.to_dict(),
        as_json,
        lambda c: c.print(
            f"marked {result.tensors} tensors ({result.parameters:,} weights) -> {esc(output)}"
        ),
    )


@watermark.command("detect")
@click.argument("suspect", type=click.Path(exists=True, path_type=Path))
@click.option("--reference", help="models:/NAME/V (non-blind) or the unmarked original's file.")
@json_option
@click.pass_obj
def detect_cmd(app: AppContext, suspect: Path, reference: str | None, as_json: bool) -> None:
    """Test SUSPECT for this installation's watermarks; reports a p-value, exits 0."""
    from assay.tracing.watermark_ops import detect_file

    data = detect_file(open_registry(app), suspect, reference=reference)

    def render(console):
        for r in data["results"]:
            console.print(
                f"{esc(r['method'])}: {esc(r['verdict'])}  z={r['z']:.1f}  p_corrected={r['p_corrected']:.3g} "
                f"(log10 {r['log10_p_corrected']:.1f})  tensors matched {r['tensors_matched']}"
            )

    app.emit(data, as_json, render)


@click.command("trace")
@click.argument("suspect", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--top", type=int, default=3, show_default=True, help="Test the N best-ranked versions in full."
)
@click.option("--model", "models", multiple=True, help="Only versions of this model (repeatable).")
@click.option(
    "--behaviour",
    is_flag=True,
    help="Test what SUSPECT answers instead of its weights: replay the answer marks `assay serve` "
    "recorded (an .onnx file; a copy distilled from the API).",
)
@click.option(
    "--trust-suspect-code",
    is_flag=True,
    help="With --behaviour: allow an MLflow pyfunc folder (loading it runs the suspect's code).",
)
@click.option(
    "--endpoint",
    metavar="URL",
    help="Instead of SUSPECT: a black-box scoring endpoint (MLflow protocol, POST URL/invocations); "
    "the answer marks are replayed against it.",
)
@click.option(
    "--api-key",
    envvar="ASSAY_ENDPOINT_API_KEY",
    help="With --endpoint: sent as 'Authorization: Bearer KEY' (as `assay serve` expects; "
    "env ASSAY_ENDPOINT_API_KEY).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="With --endpoint: an extra request header (repeatable).",
)
@click.option(
    "--max-queries",
    type=click.IntRange(1, 100_000),
    default=10_000,
    show_default=True,
    help="With --endpoint: replay at most N marked inputs in all.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.1, 600),
    default=30.0,
    show_default=True,
    help="With --endpoint: seconds per request (the whole replay is bounded to 10 minutes).",
)
@json_option
@click.pass_obj
def trace(
    app: AppContext,
    suspect: Path | None,
    top: int,
    models: tuple[str, ...],
    behaviour: bool,
    trust_suspect_code: bool,
    endpoint: str | None,
    api_key: str | None,
    headers: tuple[str, ...],
    max_queries: int,
    timeout_s: float,
    as_json: bool,
) -> None:
    """Is SUSPECT one of ours? Which version? How sure (p-value)?

    SUSPECT: a weight file, a model folder, or a sharded safetensors folder (index.json). Exact
    file hashes first; then every version is ranked on the trace index and the --top best are
    tested: position-wise first (safetensors streamed one tensor pair at a time), re-aligned for
    permutation, scaling, pruning, quantization or format conversion only when no version matched
    position-wise; then blind detection.
    With --behaviour: how many recorded answer marks SUSPECT reproduces (each distinct input
    once), against the exact chance of agreement (one-sided binomial: labels, score rows, or the
    direction of regression perturbations). Verdict `match` at corrected p <= 1e-9. With --endpoint URL
    (no SUSPECT): the same test against a served copy, through its scoring API. Exits 0 whatever
    the verdict.
    """
    if (suspect is None) == (endpoint is None):
        raise click.UsageError("give SUSPECT or --endpoint URL (one of them)")
    if endpoint is None and (api_key or headers):
        raise click.UsageError("--api-key and --header go with --endpoint")
    if endpoint is not None:
        opened = _open_endpoint(endpoint, api_key, headers, timeout_s)
        _trace_behaviour(app, endpoint, models, False, as_json, opened, max_queries)
        return
    assert suspect is not None
    if behaviour:
        _trace_behaviour(app, suspect, models, trust_suspect_code, as_json)
        return
    from assay.tracing.trace import trace_suspect

    report = trace_suspect(open_registry(app), suspect, models=list(models) or None, top=top)

    def render(console):
        table = new_table(
            console,
            "model",
            "version",
            "method",
            "verdict",
            "z",
            "p (corrected)",
            "tensors",
            "similarity",
        )
        for c in report.candidates:
            p = (
                c.evidence
                if c.method == "exact-hash" or c.p_corrected is None
                else f"{c.p_corrected:.2e} (log10 {c.log10_p_corrected:.0f})"
            )
            table.add_row(
                c.model,
                c.version,
                c.method,
                c.verdict,
                "" if c.statistic is None else f"{c.statistic:.1f}",
                p,
                str(c.tensors_matched),
                "" if c.similarity is None else f"{c.similarity:.3f}",
            )
        console.print(table)
        console.print(esc(report.summary()))
        for note in report.notes:
            console.print(f"note: {esc(note)}")

    app.emit(report.to_dict(), as_json, render)


def _open_endpoint(url: str, api_key: str | None, headers: tuple[str, ...], timeout_s: float):
    from assay.serving.endpoint import EndpointSuspect, parse_header

    sent = dict(parse_header(h) for h in headers)
    if api_key:
        sent["Authorization"] = f"Bearer {api_key.strip()}"
    return EndpointSuspect(url, headers=sent, timeout_s=timeout_s)


def _trace_behaviour(
    app: AppContext,
    suspect: Path | str,
    models: tuple[str, ...],
    trust: bool,
    as_json: bool,
    opened: object | None = None,
    max_queries: int | None = None,
) -> None:
    from assay.serving.behaviour import behaviour_trace

    report = behaviour_trace(
        open_registry(app),
        suspect,
        models=list(models) or None,
        trust_suspect_code=trust,
        suspect=opened,
        max_queries=max_queries,
    )

    def render(console):
        table = new_table(
            console,
            "model",
            "version",
            "method",
            "verdict",
            "test",
            "agreed / trials",
            "marks",
            "labels",
            "p (corrected)",
        )
        for c in report.candidates:
            table.add_row(
                c.model,
                c.version,
                "answer-marks",
                c.verdict,
                c.test,
                f"{c.agreed}/{c.trials}",
                str(c.marks),
                str(c.labels) if c.test != "direction" else "",
                f"{10**c.log10_p_corrected:.2e} (log10 {c.log10_p_corrected:.1f})",
            )
        console.print(table)
        console.print(esc(report.summary()))
        for note in report.notes:
            console.print(f"note: {esc(note)}")

    app.emit(report.to_dict(), as_json, render)

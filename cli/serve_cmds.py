"""`assay serve ...`: the verifying model server, its API clients and its alerts."""

from __future__ import annotations

import click

from assay.cli.common import open_registry
from assay.cli.context import AppContext, json_option, new_table


class ServeGroup(click.Group):
    """``assay serve MODEL_URI [options]`` runs the server; ``assay serve key|alerts`` manage it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("serve", cls=ServeGroup)
def serve() -> None:
    """Serve a model with MLflow's scoring protocol, verified and guarded.

    \b
      assay serve models:/NAME@ALIAS [--host 127.0.0.1] [--port 5000] [--workers N]
                  [--header-timeout 10] [--limit-concurrency 1000]
      assay serve key add|list|revoke|block|throttle NAME
      assay serve alerts

    POST /invocations takes what `mlflow models serve` takes (inputs, instances,
    dataframe_split, dataframe_records; JSON or CSV); GET /ping, /health, /version. The model
    loads only when assay's enforcement decision allows it (exit 3 otherwise); every answer
    names its version in X-Assay-Version. The server follows the alias: a new version is
    verified and swapped in without a restart; one that fails the decision is refused (the old
    one keeps serving) and audited, and the serving version itself is decided again on every
    check: once it is refused (marked compromised, quarantined, its signer revoked) it is
    withheld (503 MODEL_REFUSED) until the alias moves or it passes again. A pinned version (models:/NAME/V) is not
    behind an alias, so the protected-alias rule (known-good) does not apply to it. API keys, rate limits, daily quotas, the query log,
    extraction detection and answer marks follow the policy's `serving:` section. A connection
    that does not send its request head within --header-timeout seconds is closed.
    """


@serve.command("run", hidden=True)
@click.argument("model_uri")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="uvicorn worker processes (each verifies and loads; limits are per worker).",
)
@click.option(
    "--check-every",
    "interval",
    default=3.0,
    show_default=True,
    type=click.FloatRange(0.2, 3600),
    help="Seconds between alias checks.",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds a connection may take to send a request line and headers; then it is closed "
    "(slow-header clients). The body is bounded by the policy's request_timeout_s.",
)
@click.option(
    "--limit-concurrency",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Connections and requests at once per worker; beyond it, 503.",
)
@click.pass_obj
def run(
    app: AppContext,
    model_uri: str,
    host: str,
    port: int,
    workers: int,
    interval: float,
    header_timeout: float,
    limit_concurrency: int,
) -> None:
    """Serve MODEL_URI (models:/NAME@ALIAS or models:/NAME/VERSION)."""
    from assay.serving.server import serve as serve_model

    registry = open_registry(app)
    click.echo(f"assay serve: {model_uri} on http://{host}:{port}", err=True)
    serve_model(
        registry,
        model_uri,
        host=host,
        port=port,
        workers=workers,
        interval=interval,
        header_timeout=header_timeout,
        limit_concurrency=limit_concurrency,
    )


@serve.group("key")
def key() -> None:
    """API clients of the server: a secret per client, stored hashed.

    Every change is signed and needs a key holding the policy's serve-clients role
    (default responder)."""


@key.command("add")
@click.argument("name")
@click.pass_obj
def key_add(app: AppContext, name: str) -> None:
    """Create client NAME and print its secret once (it is not stored, only its SHA-256)."""
    from assay.registry.serving_clients import add_client

    secret = add_client(open_registry(app), name)
    click.echo(secret)
    click.echo(f"client {name}: keep this secret now, it is not shown again", err=True)


def _clients_table(clients):
    def render(console):
        table = new_table(console, "client", "status", "created", "throttle", "reason")
        for c in clients:
            status = c.status  # tampered / legacy: a row no signed statement vouches for
            throttle = (
                f"{c.throttle['rate_per_second']:g}/s burst {c.throttle['burst']}"
                if c.throttle
                else ""
            )
            table.add_row(
                c.name, status, c.created_at.isoformat(timespec="seconds"), throttle, c.reason or ""
            )
        console.print(table)

    return render


@key.command("list")
@json_option
@click.pass_obj
def key_list(app: AppContext, as_json: bool) -> None:
    """List the server's API clients.

    Each is checked against its signed changes: status ``tampered`` is a row no signed
    statement vouches for (written into the database), ``legacy`` a client added before the
    statements named its secret hash; the server refuses both (revoke and add a new client)."""
    from assay.registry.serving_clients import list_clients

    clients = list_clients(open_registry(app))
    app.emit([c.to_dict() for c in clients], as_json, _clients_table(clients))


@key.command("revoke")
@click.argument("name")
@click.option("--reason", help="Recorded with the revocation.")
@json_option
@click.pass_obj
def key_revoke(app: AppContext, name: str, reason: str | None, as_json: bool) -> None:
    """Revoke client NAME's key (running servers refuse it within one alias check)."""
    from assay.registry.serving_clients import revoke_client

    client = revoke_client(open_registry(app), name, reason)
    app.emit(client.to_dict(), as_json, _clients_table([client]))


@key.command("block")
@click.argument("name")
@click.option("--reason", help="Recorded with the block.")
@json_option
@click.pass_obj
def key_block(app: AppContext, name: str, reason: str | None, as_json: bool) -> None:
    """Block client NAME (403 for every query)."""
    from assay.registry.serving_clients import block_client

    client = block_client(open_registry(app), name, reason)
    app.emit(client.to_dict(), as_json, _clients_table([client]))


@key.command("throttle")
@click.argument("name")
@click.option(
    "--rate", "rate", type=click.FloatRange(min=0.001), required=True, help="Queries per second."
)
@click.option("--burst", type=click.IntRange(min=1), required=True, help="Bucket size.")
@click.option("--reason", help="Recorded with the throttle.")
@json_option
@click.pass_obj
def key_throttle(
    app: AppContext, name: str, rate: float, burst: int, reason: str | None, as_json: bool
) -> None:
    """Lower client NAME's rate limit below the policy's."""
    from assay.registry.serving_clients import throttle_client

    client = throttle_client(open_registry(app), name, rate, burst, reason)
    app.emit(client.to_dict(), as_json, _clients_table([client]))


@serve.command("alerts")
@click.option("--client", help="Only this client's alerts.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@click.pass_obj
def alerts(app: AppContext, client: str | None, limit: int, as_json: bool) -> None:
    """Findings of the serving guard (extraction, volume), newest first."""
    from assay.serving.alerts import list_alerts

    rows = list_alerts(open_registry(app), limit=limit, client=client)

    def render(console):
        table = new_table(console, "id", "at", "client", "model", "kind", "status", "evidence")
        for r in rows:
            evidence = ", ".join(f"{k}={v}" for k, v in r["detail"].items() if k not in ("model",))
            table.add_row(
                str(r["id"]), r["at"], r["client"], r["model"], r["kind"], r["status"], evidence
            )
        console.print(table)

    app.emit(rows, as_json, render)

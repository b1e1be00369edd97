"""The ``assay`` click group: global options, error handling and command registration.

Every command is a thin layer: parse options, call one library function, render the result
(``--json`` for machines). Library imports happen inside commands so ``assay --help`` stays fast.
"""

from __future__ import annotations

import sys
import traceback

import click

from assay.cli.context import AppContext

ENV_HELP = """\b
Environment:
  ASSAY_HOME            assay's folder (keys, store, checkpoints)
  ASSAY_DB_URL          SQLAlchemy URL of the store (default sqlite:///$ASSAY_HOME/assay.db)
  MLFLOW_TRACKING_URI   MLflow URI (default sqlite:///$ASSAY_HOME/mlflow.db)
  ASSAY_KEY             private signing key for CI (PEM text or a path), trusted by an admin
  ASSAY_KEY_PASSPHRASE  passphrase of encrypted private keys
  ASSAY_TRUST_ROOT      the store's admin key id, for a home joining a shared store
  ASSAY_ENFORCE         enforcement at model load: enforce (default), warn, off
  ASSAY_ACTOR           display name next to the acting key's id in the audit log

\b
Exit codes: 0 ok, 1 error, 2 usage, 3 integrity failure (verification failed, tampering).
"""


class AssayGroup(click.Group):
    """A click group that turns ``AssayError`` into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        from assay.core.errors import AssayError

        try:
            return super().invoke(ctx)
        except AssayError as exc:
            obj = ctx.obj if isinstance(ctx.obj, AppContext) else None
            if obj is not None and obj.verbose:
                traceback.print_exc(file=sys.stderr)
            click.echo(f"error: {exc}", err=True)
            if obj is not None and obj.verbose and exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(exc.exit_code)


@click.group(
    cls=AssayGroup, epilog=ENV_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="ASSAY_HOME",
    help="assay's folder (default: $ASSAY_HOME or the platform's app folder).",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Show tracebacks, debug logs and a hint under each error."
)
@click.version_option(package_name="assay-integrity", prog_name="assay")
@click.pass_context
def cli(ctx: click.Context, home: str | None, verbose: bool) -> None:
    """assay: sign, verify, trace and roll back machine-learning models.

    A model-integrity and incident-response registry layered on MLflow.
    """
    if verbose:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = AppContext(home=home, verbose=verbose)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="assay")

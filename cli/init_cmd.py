"""`assay init`: create ASSAY_HOME, the store and a first signing key."""

from __future__ import annotations

import click

from assay.cli.context import AppContext, json_option


@click.command("init")
@click.option(
    "--key-type",
    type=click.Choice(["ecdsa-p256", "ed25519"]),
    default="ecdsa-p256",
    show_default=True,
    help="Type of the first signing key (ECDSA P-256 is what OMS verifiers accept).",
)
@json_option
@click.pass_obj
def init(app: AppContext, key_type: str, as_json: bool) -> None:
    """Create assay's folder, store and first signing key (safe to re-run)."""
    from assay.registry.facade import Registry

    result = Registry.initialise(app.settings, key_type=key_type)

    def render(console):
        console.print(f"assay home: {result.home}")
        console.print(f"store:      {result.db_url}")
        if result.tracking_uri:
            console.print(f"mlflow:     {result.tracking_uri}")
        if result.created_key is not None:
            k = result.created_key
            console.print(f"created signing key {k.key_id[:16]} ({k.key_type}, name {k.name})")
        else:
            console.print("signing keys already present; nothing to create")

    app.emit(result.to_dict(), as_json, render)

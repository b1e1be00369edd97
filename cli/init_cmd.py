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
@click.option(
    "--trust-root",
    default=None,
    metavar="KEY_ID",
    help="Join a store that already has an admin key: its full key id (from your admin); "
    "also ASSAY_TRUST_ROOT.",
)
@json_option
@click.pass_obj
def init(app: AppContext, key_type: str, trust_root: str | None, as_json: bool) -> None:
    """Create assay's folder and store; the first init on a store creates its admin key.

    Later inits (a CI job joining a shared store with its own ASSAY_HOME) add no key: they pin
    the store's trust root given by --trust-root or ASSAY_TRUST_ROOT. Safe to re-run.
    """
    from assay.registry.facade import Registry

    result = Registry.initialise(app.settings, key_type=key_type, trust_root=trust_root)

    def render(console):
        console.print(f"assay home: {result.home}")
        console.print(f"store:      {result.db_url}")
        if result.tracking_uri:
            console.print(f"mlflow:     {result.tracking_uri}")
        if result.created_key is not None:
            k = result.created_key
            console.print(f"created admin key {k.key_id[:16]} ({k.key_type}, name {k.name})")
        else:
            console.print("no key created (this store already has its admin key)")
        if result.trust_root:
            console.print(f"trust root: {result.trust_root}")
            console.print("(others join this store with `assay init --trust-root <that id>`)")

    app.emit(result.to_dict(), as_json, render)

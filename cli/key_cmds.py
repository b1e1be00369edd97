"""`assay key ...`: generate, list, export, trust and revoke signing keys."""

from __future__ import annotations

from pathlib import Path

import click

from assay.cli.common import ISO_TIME, open_registry
from assay.cli.context import AppContext, json_option, new_table


@click.group("key")
def key() -> None:
    """Manage signing keys and the keys assay trusts."""


@key.command("generate")
@click.option(
    "--type",
    "key_type",
    type=click.Choice(["ecdsa-p256", "ed25519"]),
    default="ecdsa-p256",
    show_default=True,
    help="ECDSA P-256 bundles verify with OMS tools; Ed25519 ones only with assay.",
)
@click.option("--name", default=None, help="A name to refer to the key by.")
@json_option
@click.pass_obj
def generate(app: AppContext, key_type: str, name: str | None, as_json: bool) -> None:
    """Create a signing key (encrypted with ASSAY_KEY_PASSPHRASE when set) and trust it."""
    record = open_registry(app).keys.generate(
        name=name, key_type=key_type, passphrase=app.settings.key_passphrase
    )
    app.emit(
        record.to_dict(),
        as_json,
        lambda c: c.print(f"generated {record.key_type} key {record.key_id} ({record.name})"),
    )


@key.command("list")
@json_option
@click.pass_obj
def list_keys(app: AppContext, as_json: bool) -> None:
    """List keys: the keyring's private keys and every trusted public key."""
    from assay.registry.fast_read import list_keys

    records = list_keys(app.settings)

    def render(console):
        table = new_table(console, "key id", "name", "type", "private", "status", "created")
        for r in records:
            table.add_row(
                r.key_id[:16],
                r.name,
                r.key_type,
                "yes" if r.has_private else "no",
                r.status,
                r.created_at.isoformat(timespec="seconds") if r.created_at else "",
            )
        console.print(table)

    app.emit([r.to_dict() for r in records], as_json, render)


@key.command("export")
@click.argument("key_ref")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file.")
@click.pass_obj
def export(app: AppContext, key_ref: str, output: str | None) -> None:
    """Print the public key KEY_REF (id, id prefix or name) as PEM."""
    pem = open_registry(app).keys.export(key_ref)
    if output:
        from assay.core.errors import AssayError
        from assay.registry.fsutil import write_new_file

        try:
            write_new_file(Path(output), pem.encode())
        except OSError as exc:
            raise AssayError(f"cannot write {output}: {exc.strerror or exc}") from exc
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(pem, nl=False)


@key.command("trust")
@click.argument("pem_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="Who or what this key belongs to.")
@json_option
@click.pass_obj
def trust(app: AppContext, pem_file: str, name: str, as_json: bool) -> None:
    """Trust the public key in PEM_FILE for verifying signatures."""
    from assay.core.errors import FormatError

    try:
        pem_text = Path(pem_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"cannot read {pem_file} as a PEM public key: {exc}") from exc
    record = open_registry(app).keys.trust(pem_text, name=name)
    app.emit(
        record.to_dict(),
        as_json,
        lambda c: c.print(f"trusted {record.key_type} key {record.key_id} ({record.name})"),
    )


@key.command("revoke")
@click.argument("key_ref")
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.option(
    "--compromised-since",
    type=ISO_TIME,
    default=None,
    help="When the key was compromised: signatures recorded after it stop verifying.",
)
@json_option
@click.pass_obj
def revoke(app: AppContext, key_ref: str, reason: str, compromised_since, as_json: bool) -> None:
    """Revoke KEY_REF: signatures recorded after the revocation (or compromise) fail."""
    record = open_registry(app).keys.revoke(
        key_ref, reason=reason, compromised_since=compromised_since
    )
    app.emit(
        record.to_dict(),
        as_json,
        lambda c: c.print(f"revoked key {record.key_id} ({record.name}): {reason}"),
    )

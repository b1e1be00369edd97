"""`assay key ...`: generate, list, export, trust, grant and revoke signing keys.

Trust lives in the store's signed trust list: trusting, granting and revoking need the admin key
(``ASSAY_KEY`` or the keyring default holding the ``admin`` role); a key may always revoke itself.
"""

from __future__ import annotations

from pathlib import Path

import click

from assay.cli.common import ISO_TIME, esc, open_registry
from assay.cli.context import AppContext, json_option, new_table

ROLE_HELP = "Role to grant (repeatable): admin, signer, approver, responder."


def _role_option(default: tuple[str, ...] | None):
    return click.option(
        "--role",
        "roles",
        multiple=True,
        type=click.Choice(["admin", "signer", "approver", "responder"]),
        default=default,
        show_default=bool(default),
        help=ROLE_HELP,
    )


@click.group("key")
def key() -> None:
    """Manage signing keys and the keys assay trusts (a signed trust list, changed by an admin)."""


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
@_role_option(("signer",))
@json_option
@click.pass_obj
def generate(
    app: AppContext, key_type: str, name: str | None, roles: tuple[str, ...], as_json: bool
) -> None:
    """Create a signing key (encrypted with ASSAY_KEY_PASSPHRASE when set).

    When the key acting here is an admin, the new key is trusted with --role at once; otherwise
    it stays untrusted until an admin runs `assay key trust` with its public key.
    """
    record = open_registry(app).keys.generate(
        name=name, key_type=key_type, passphrase=app.settings.key_passphrase, roles=roles
    )

    def render(c):
        c.print(f"generated {record.key_type} key {record.key_id} ({esc(record.name)})")
        if record.trusted:
            c.print(f"trusted with roles: {', '.join(record.roles)}")
        else:
            c.print(
                "not trusted yet: give `assay key export "
                f"{record.key_id[:16]}` to an admin for `assay key trust`"
            )

    app.emit(record.to_dict(), as_json, render)


@key.command("list")
@json_option
@click.pass_obj
def list_keys(app: AppContext, as_json: bool) -> None:
    """List keys: the keyring's private keys and every trusted public key."""
    from assay.registry.fast_read import list_keys

    records = list_keys(app.settings)

    def render(console):
        table = new_table(
            console, "key id", "name", "type", "private", "status", "roles", "created"
        )
        for r in records:
            table.add_row(
                r.key_id[:16],
                r.name,
                r.key_type,
                "yes" if r.has_private else "no",
                r.status,
                ",".join(r.roles),
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
        from assay.core.atomic import write_new_file
        from assay.core.errors import AssayError

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
@_role_option(("signer",))
@json_option
@click.pass_obj
def trust(app: AppContext, pem_file: str, name: str, roles: tuple[str, ...], as_json: bool) -> None:
    """Trust the public key in PEM_FILE with --role (admin key only; e.g. a CI job's key)."""
    from assay.core.errors import FormatError

    try:
        pem_text = Path(pem_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"cannot read {pem_file} as a PEM public key: {exc}") from exc
    record = open_registry(app).keys.trust(pem_text, name=name, roles=roles)
    app.emit(
        record.to_dict(),
        as_json,
        lambda c: c.print(
            f"trusted {record.key_type} key {record.key_id} ({esc(record.name)}) "
            f"with roles: {', '.join(record.roles)}"
        ),
    )


@key.command("grant")
@click.argument("key_ref")
@_role_option(None)
@click.option("--remove", is_flag=True, help="Take the roles away instead.")
@json_option
@click.pass_obj
def grant(
    app: AppContext, key_ref: str, roles: tuple[str, ...], remove: bool, as_json: bool
) -> None:
    """Grant (or --remove) roles of the trusted key KEY_REF (admin key only)."""
    if not roles:
        raise click.UsageError("name at least one --role")
    record = open_registry(app).keys.grant(key_ref, roles, remove=remove)
    app.emit(
        record.to_dict(),
        as_json,
        lambda c: c.print(
            f"key {record.key_id[:16]} ({esc(record.name)}) roles: {', '.join(record.roles)}"
        ),
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
        lambda c: c.print(f"revoked key {record.key_id} ({esc(record.name)}): {esc(reason)}"),
    )

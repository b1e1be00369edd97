"""`assay policy ...`: show, set and verify the store's signed policy."""

from __future__ import annotations

import json
from pathlib import Path

import click

from assay.cli.common import open_registry
from assay.cli.context import AppContext, json_option


@click.group("policy")
def policy() -> None:
    """The store's policy: protected aliases, roles per action, enforcement, unmanaged models.

    It is a signed statement in the store; changing it needs the admin key, and a policy row
    edited in the database is refused (exit 3) everywhere it is read.
    """


def _render(policy_obj):
    def render(console):
        doc = policy_obj.to_dict()
        origin = (
            f"serial {doc['serial']}, signed by {str(doc['signed_by'])[:16]} at {doc['issued_at']}"
            if doc["serial"]
            else "built-in default (no policy set)"
        )
        console.print(f"policy: {origin}", markup=False)
        console.print(f"enforcement:       {doc['enforcement']}", markup=False)
        console.print(f"protected aliases: {', '.join(doc['protected_aliases'])}", markup=False)
        console.print(f"allow unmanaged:   {str(doc['allow_unmanaged']).lower()}", markup=False)
        for action, role in doc["roles"].items():
            console.print(f"role for {action + ':':17} {role}", markup=False)
        signing = doc["signing"]
        shards = f", shards of {signing['shard_size']} bytes" if signing["shard_size"] else ""
        console.print(f"signing:           {signing['hash']}{shards}", markup=False)
        if "serving" in doc:  # assay serve's section, when set (--json shows every key)
            console.print(f"serving:           {json.dumps(doc['serving'])}", markup=False)
        for model, gates in doc.get("gates", {}).items():
            console.print(f"gates for {model}: {', '.join(gates)}", markup=False)

    return render


@policy.command("show")
@json_option
@click.pass_obj
def show(app: AppContext, as_json: bool) -> None:
    """Print the policy in force (checked: exit 3 if the stored policy does not verify)."""
    current = open_registry(app).policy()
    app.emit(current.to_dict(), as_json, _render(current))


@policy.command("verify")
@json_option
@click.pass_obj
def verify(app: AppContext, as_json: bool) -> None:
    """Check every stored policy statement and the trust list behind them (exit 3 if not)."""
    current = open_registry(app).policy()
    app.emit(
        {"ok": True, **current.to_dict()},
        as_json,
        lambda c: c.print(f"OK policy serial {current.serial} verifies", markup=False),
    )


@policy.command("set")
@click.argument("policy_file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.pass_obj
def set_cmd(app: AppContext, policy_file: Path, as_json: bool) -> None:
    """Sign POLICY_FILE (YAML) with the admin key and make it the policy in force."""
    from assay.trust.policy_service import read_policy_file, set_policy

    parsed = read_policy_file(policy_file)
    stored = set_policy(open_registry(app), parsed)
    app.emit(stored.to_dict(), as_json, _render(stored))

"""Serving clients against their signed statements, below the server (review F7): a key
compromised before it signed an add no longer vouches for the client, also once the
verification results are memoised. On SQLite and, with ``ASSAY_TEST_PG_URL``, PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from registry_fixtures import home_fixture

world = home_fixture()


def test_compromising_the_adding_key_withdraws_its_clients(
    world: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.core.settings import Settings
    from assay.integrity.keys import generate_key
    from assay.registry.facade import Registry
    from assay.registry.serving_clients import add_client as add
    from assay.registry.serving_clients import client_table, hash_secret, list_clients
    from assay.store.models import utcnow

    _, admin = world
    responder = generate_key("ecdsa-p256")
    pem = tmp_path / "responder.pem"
    pem.write_bytes(responder.private_pem(None))
    admin.keys.trust(responder.public_key.pem, name="on-call", roles=["responder"])
    before = utcnow() - timedelta(seconds=1)
    monkeypatch.setenv("ASSAY_KEY", str(pem))
    secret = add(Registry.open(Settings.from_env()), "pager")
    monkeypatch.delenv("ASSAY_KEY")
    kept = add(admin, "kept")
    table = client_table(admin)
    assert hash_secret(secret) in table and table[hash_secret(secret)].status == "active"
    assert client_table(admin).keys() == table.keys()  # the memoised second pass agrees
    admin.keys.revoke(responder.key_id, reason="laptop stolen", compromised_since=before)
    table = client_table(admin)
    assert hash_secret(secret) not in table and hash_secret(kept) in table
    assert {c.name: c.status for c in list_clients(admin)} == {
        "kept": "active",
        "pager": "tampered",
    }

"""Every migration, on a populated store, on SQLite and PostgreSQL: rows written with the 0001 and
0002 schemas (every table, strings at their old full length) survive the upgrade to head unchanged,
foreign keys still hold, and the columns 0003 widened take values longer than before."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from assay.core.settings import Settings
from assay.store.models import Base
from assay.store.store import HEAD_REVISION, Store

WHEN = datetime(2026, 5, 20, 12, 0, 0, tzinfo=timezone.utc)
KEY_ID = "ab" * 32
# Rows that point at other rows: the generic filler would not know these.
LINKS: dict[str, list[dict[str, Any]]] = {
    "keys": [{"key_id": KEY_ID, "has_private": True}],
    "artifacts": [{"id": 1, "kind": "model"}, {"id": 2, "kind": "dataset", "version": None}],
    "signatures": [{"id": 1, "artifact_id": 1, "key_id": KEY_ID}],
    "audit_events": [{"seq": 0}, {"seq": 1}],
    "checkpoints": [{"id": 1, "key_id": KEY_ID}],
    "artifact_states": [{"artifact_id": 1}, {"artifact_id": 2}],
    "state_changes": [{"id": 1, "artifact_id": 1}],
    "alias_moves": [{"id": 1}],
    "lineage": [{"id": 1, "child_id": 1, "parent_id": 2}],
    "freezes": [{}],
    "watermarks": [{"artifact_id": 1}],
    "incidents": [{"id": "inc-20260520-120000-abcdef"}],
    "incident_steps": [{"id": 1, "incident_id": "inc-20260520-120000-abcdef", "item_index": -1}],
}
OLD_REVISIONS = ("0001", "0002")
CREATED_BY = {  # the migration that made each table
    **dict.fromkeys(["keys", "artifacts", "signatures", "audit_events", "checkpoints"], "0001"),
    **dict.fromkeys(
        [
            "artifact_states",
            "state_changes",
            "alias_moves",
            "lineage",
            "freezes",
            "watermarks",
            "incidents",
            "incident_steps",
        ],
        "0002",
    ),
}


def _value(column: sa.Column, n: int) -> Any:
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return False
    if isinstance(kind, sa.Integer):
        return 7 + n
    if isinstance(kind, sa.DateTime):
        return WHEN
    length = getattr(kind, "length", None)
    if length:  # a full-length value: nothing may be cut on the way
        return (f"{column.name}{n}-" + "x" * length)[:length]
    return f"{column.name} {n}: text with ünïcode and\nnewlines " + "y" * 3000


def _fill(conn: sa.Connection, revision: str) -> None:
    meta = sa.MetaData()
    meta.reflect(conn)
    for name, rows in LINKS.items():
        if CREATED_BY[name] != revision:
            continue
        table = meta.tables[name]
        for n, fixed in enumerate(rows):
            row = {c.name: _value(c, n) for c in table.columns}
            row.update(fixed)
            conn.execute(table.insert().values(**row))
    if revision == "0001":
        conn.execute(sa.text("UPDATE audit_head SET tree_size = 2 WHERE id = 1"))


def _dump(conn: sa.Connection) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for name in [*LINKS, "audit_head"]:
        rows = conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY 1")).all()
        out[name] = sorted((tuple(str(v) for v in r) for r in rows), key=repr)
    return out


def test_populated_store_upgrades_across_every_migration(settings: Settings) -> None:
    store = Store(settings.db_url)
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        for revision in OLD_REVISIONS:
            store.upgrade(revision)
            with store.engine.begin() as conn:
                _fill(conn, revision)
        assert store.revision() == "0002"
        with store.engine.connect() as conn:
            before = _dump(conn)
        assert all(before[name] for name in LINKS), "every table has rows"

        store.upgrade()
        assert store.revision() == HEAD_REVISION
        with store.engine.connect() as conn:
            assert _dump(conn) == before  # nothing lost, nothing cut, no cascade

        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []

        # Foreign keys still hold (SQLite turns them off only while migrating).
        with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO lineage (id, child_id, parent_id, relation)"
                    " VALUES (9, 1, 999, 'trained-on')"
                )
            )
        # What did not fit before fits now: a sha256: digest of 71 characters, long names.
        digest = "sha256:" + "0" * 64
        with store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE incidents SET playbook_digest = :d, playbook_id = :p"),
                {"d": digest, "p": "p" * 1000},
            )
            conn.execute(sa.text("UPDATE artifacts SET name = :n WHERE id = 1"), {"n": "n" * 2000})
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT playbook_digest FROM incidents")).scalar() == digest
        Store.open(settings).dispose()  # at head: opens without `assay init`
    finally:
        store.dispose()


def test_downgrade_to_0002(settings: Settings) -> None:
    """0003 goes back down on an empty store (the schema is 0002's again)."""
    store = Store(settings.db_url)
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        store.upgrade()
        from alembic import command
        from alembic.config import Config

        from assay.store.store import MIGRATIONS_DIR

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with store.engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0002")
            conn.commit()
        assert store.revision() == "0002"
    finally:
        store.dispose()

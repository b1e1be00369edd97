"""Text for every string column whose length the code does not bound.

PostgreSQL enforces ``VARCHAR(n)`` (SQLite does not), and several columns held values longer than
their declared length: ``incidents.playbook_digest`` is ``sha256:`` + 64 hex digits (71 characters)
in a ``String(64)``, so every `assay incident run` failed on PostgreSQL. The columns below hold
names, versions, aliases, actors, incident ids given with ``--incident``, playbook and step ids,
paths and key names: none is bounded where it is written, so all become ``TEXT``. Columns that
keep a length hold values of a fixed shape that assay itself makes (hex SHA-256 digests, key and
incident ids it generates, state/status/kind/relation/via words).

On SQLite a column's type changes by rebuilding its table (Alembic batch mode);
:meth:`assay.store.store.Store.upgrade` turns foreign keys off around the migration so that
rebuilding a parent table never cascades into its children, and checks them afterwards.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: table -> {column: (old length, nullable)}
WIDENED: dict[str, dict[str, tuple[int, bool]]] = {
    "keys": {"name": (200, False), "source": (200, True)},
    "artifacts": {"name": (500, False), "version": (200, True)},
    "audit_events": {"actor": (200, False)},
    "checkpoints": {"origin": (200, False)},
    "artifact_states": {"incident_id": (64, True), "run_id": (64, True)},
    "state_changes": {"incident_id": (64, True), "actor": (200, False)},
    "alias_moves": {
        "model_name": (500, False),
        "alias": (200, False),
        "from_version": (200, True),
        "to_version": (200, True),
        "incident_id": (64, True),
        "actor": (200, False),
    },
    "freezes": {"model_name": (500, False), "incident_id": (64, True), "actor": (200, False)},
    "incidents": {
        "playbook_id": (200, False),
        "playbook_digest": (64, False),
        "actor": (200, False),
    },
    "incident_steps": {"step_id": (200, False)},
}


def _alter(to_text: bool) -> None:
    for table, columns in WIDENED.items():
        with op.batch_alter_table(table) as batch:
            for column, (length, nullable) in columns.items():
                old, new = sa.String(length), sa.Text()
                batch.alter_column(
                    column,
                    existing_type=old if to_text else new,
                    type_=new if to_text else old,
                    existing_nullable=nullable,
                )


def upgrade() -> None:
    _alter(to_text=True)


def downgrade() -> None:
    # Fails on PostgreSQL if a longer value was stored since: nothing is silently truncated.
    _alter(to_text=False)

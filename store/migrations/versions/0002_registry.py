"""Registry layer: version states and history, alias moves, lineage, freezes, watermarks,
incidents and their steps.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _artifact_fk(name: str = "artifact_id", **kw) -> sa.Column:
    return sa.Column(name, sa.Integer(), sa.ForeignKey("artifacts.id", ondelete="CASCADE"), **kw)


def upgrade() -> None:
    op.create_table(
        "artifact_states",
        _artifact_fk(primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("incident_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "state_changes",
        sa.Column("id", sa.Integer(), primary_key=True),
        _artifact_fk(nullable=False, index=True),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("incident_id", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "alias_moves",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.String(500), nullable=False, index=True),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("from_version", sa.String(200), nullable=True),
        sa.Column("to_version", sa.String(200), nullable=True),
        sa.Column("via", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("incident_id", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "lineage",
        sa.Column("id", sa.Integer(), primary_key=True),
        _artifact_fk("child_id", nullable=False, index=True),
        _artifact_fk("parent_id", nullable=False, index=True),
        sa.Column("relation", sa.String(32), nullable=False),
        sa.UniqueConstraint("child_id", "parent_id", name="uq_lineage_edge"),
    )
    op.create_table(
        "freezes",
        sa.Column("model_name", sa.String(500), primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("incident_id", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "watermarks",
        _artifact_fk(primary_key=True),
        sa.Column("secret_fingerprint", sa.String(64), nullable=False, index=True),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("shapes", sa.Text(), nullable=False),
        sa.Column("parameters", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("playbook_id", sa.String(200), nullable=False),
        sa.Column("playbook_digest", sa.String(64), nullable=False),
        sa.Column("playbook_source", sa.Text(), nullable=False),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "incident_steps",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "incident_id",
            sa.String(64),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("step_id", sa.String(200), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("outputs", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.UniqueConstraint("incident_id", "step_id", "item_index", name="uq_incident_step_item"),
    )


def downgrade() -> None:
    for table in (
        "incident_steps",
        "incidents",
        "watermarks",
        "freezes",
        "lineage",
        "alias_moves",
        "state_changes",
        "artifact_states",
    ):
        op.drop_table(table)

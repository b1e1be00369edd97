"""Initial schema: keys, artifacts, signatures, audit log, checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_type", sa.String(32), nullable=False),
        sa.Column("public_pem", sa.Text(), nullable=False),
        sa.Column("has_private", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("not_before", TS, nullable=True),
        sa.Column("not_after", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.Column("compromised_since", TS, nullable=True),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("version", sa.String(200), nullable=True),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("manifest_root", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("kind", "name", "version", name="uq_artifacts_kind_name_version"),
    )
    op.create_index(
        "uq_artifacts_kind_name_unversioned",
        "artifacts",
        ["kind", "name"],
        unique=True,
        sqlite_where=sa.text("version IS NULL"),
        postgresql_where=sa.text("version IS NULL"),
    )
    op.create_table(
        "signatures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "artifact_id",
            sa.Integer(),
            sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("manifest_root", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), sa.ForeignKey("keys.key_id"), nullable=False),
        sa.Column("bundle", sa.Text(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
    )
    op.create_index("ix_signatures_artifact_id", "signatures", ["artifact_id"])
    op.create_index("ix_signatures_key_id", "signatures", ["key_id"])
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    audit_head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("tree_size", sa.Integer(), nullable=False),
    )
    op.bulk_insert(audit_head, [{"id": 1, "tree_size": 0}])
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("origin", sa.String(200), nullable=False),
        sa.Column("tree_size", sa.Integer(), nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_checkpoints_tree_size", "checkpoints", ["tree_size"])


def downgrade() -> None:
    op.drop_index("ix_checkpoints_tree_size", table_name="checkpoints")
    op.drop_table("checkpoints")
    op.drop_table("audit_head")
    op.drop_index("ix_audit_events_action", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_signatures_key_id", table_name="signatures")
    op.drop_index("ix_signatures_artifact_id", table_name="signatures")
    op.drop_table("signatures")
    op.drop_index("uq_artifacts_kind_name_unversioned", table_name="artifacts")
    op.drop_table("artifacts")
    op.drop_table("keys")

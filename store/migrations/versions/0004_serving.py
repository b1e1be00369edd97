"""Serving guard: API clients, the append-only query log, alerts and answer watermarks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "serve_clients",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("blocked_at", TS, nullable=True),
        sa.Column("throttle", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_table(
        "serve_queries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.Text(), nullable=False, index=True),
        sa.Column("at", TS, nullable=False, index=True),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("input_digest", sa.String(64), nullable=True),
        sa.Column("answer_digest", sa.String(64), nullable=True),
        sa.Column("sample", sa.Text(), nullable=True),
    )
    op.create_table(
        "serve_alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.Text(), nullable=False, index=True),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "serve_marks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.Text(), nullable=False, index=True),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("client", sa.Text(), nullable=False),
        sa.Column("input_digest", sa.String(64), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("original", sa.Text(), nullable=False),
        sa.Column("at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("serve_marks", "serve_alerts", "serve_queries", "serve_clients"):
        op.drop_table(table)

"""Audit events by subject: the enforcement decision reads a version's newest state event.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

The decision compares a version's newest signed state statement with its newest ``model.state``
audit event (a deleted statement shows); ``(subject, seq)`` makes that one index lookup instead
of a walk back through every state event of every version.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_subject_seq", "audit_events", ["subject", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_subject_seq", table_name="audit_events")

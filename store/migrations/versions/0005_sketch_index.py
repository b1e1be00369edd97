"""Trace index: per version and marked tensor shape, a few marked values (watermark_sketches).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Backfill: every version registered before 0005 gets its rows from the sketch its watermark record
already holds (the first tensor of each shape, float32), so ranking sees old and new alike.
"""

from __future__ import annotations

import json
import struct

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

MAX_SHAPES = 64


def _rows(record_json: str) -> list[tuple[str, str, bytes]]:
    try:
        record = json.loads(record_json)
        out: dict[str, tuple[str, str, bytes]] = {}
        for file, entry in (record.get("files") or {}).items():
            for tensor, item in (entry.get("sketch") or {}).items():
                key = "x".join(str(int(d)) for d in item["shape"])
                if key not in out and len(out) < MAX_SHAPES:
                    values = [float(v) for v in item["values"]]
                    out[key] = (key, f"{file}:{tensor}", struct.pack(f"<{len(values)}f", *values))
        return list(out.values())
    except (ValueError, TypeError, KeyError, AttributeError, struct.error):
        return []  # a record without a usable sketch is ranked by shape only, as before


def upgrade() -> None:
    table = op.create_table(
        "watermark_sketches",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "artifact_id",
            sa.Integer(),
            sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("secret_fingerprint", sa.String(64), nullable=False),
        sa.Column("shape", sa.String(255), nullable=False),
        sa.Column("tensor", sa.Text(), nullable=False),
        sa.Column("values", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("artifact_id", "shape", name="uq_watermark_sketches_shape"),
    )
    op.create_index("ix_watermark_sketches_artifact_id", "watermark_sketches", ["artifact_id"])
    op.create_index("ix_watermark_sketches_shape", "watermark_sketches", ["shape"])
    conn = op.get_bind()
    found = conn.execute(
        sa.text("SELECT artifact_id, secret_fingerprint, record FROM watermarks")
    ).all()
    for artifact_id, fingerprint, record in found:
        rows = [
            {"artifact_id": artifact_id, "secret_fingerprint": fingerprint, "shape": key,
             "tensor": tensor, "values": values}
            for key, tensor, values in _rows(record or "")
        ]  # fmt: skip
        if rows:
            conn.execute(table.insert(), rows)


def downgrade() -> None:
    op.drop_table("watermark_sketches")

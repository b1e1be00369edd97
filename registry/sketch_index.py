"""The trace index: per registered version, a few marked values for each tensor shape it marked.

Registration stores one :class:`~assay.store.models.WatermarkSketch` row per (version, shape):
the ``SKETCH_SIZE`` marked values of its first tensor of that shape at the fixed positions
``sketch_indices(shape)``, as float32 bytes. ``assay trace`` reads only the rows of the shapes the
suspect has, stacks them into one matrix per shape and ranks every version with one matrix product
per shape (``assay.watermark.sketch.rank``), so "which of 10,000 versions could this be" is one pass over compact rows.
Migration 0005 builds the rows of versions registered before it from their watermark records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assay.store.models import WatermarkSketch
from assay.watermark.sketch import ShapeBlock, shape_key, zscores

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: shapes indexed per version (a transformer has a handful; the rest add nothing to the ranking)
MAX_SHAPES = 64


def rows_from_record(record: Mapping[str, Any]) -> list[tuple[str, str, list[float]]]:
    """``(shape key, tensor, values)`` for the first sketched tensor of each shape in a record."""
    out: dict[str, tuple[str, str, list[float]]] = {}
    for file, entry in (record.get("files") or {}).items():
        for tensor, item in (entry.get("sketch") or {}).items():
            key = shape_key(item["shape"])
            if key not in out and len(out) < MAX_SHAPES:
                out[key] = (key, f"{file}:{tensor}", list(item["values"]))
    return list(out.values())


def index_version(
    session: Session, artifact_id: int, fingerprint: str, record: Mapping[str, Any]
) -> int:
    """Add the sketch rows of one version (from its watermark record); returns how many."""
    import numpy as np

    rows = rows_from_record(record)
    for key, tensor, values in rows:
        session.add(
            WatermarkSketch(
                artifact_id=artifact_id,
                secret_fingerprint=fingerprint,
                shape=key,
                tensor=tensor,
                values=np.asarray(values, dtype="<f4").tobytes(),
            )
        )
    return len(rows)


def load_blocks(session: Session, shapes: Iterable[tuple[int, ...]]) -> dict[str, ShapeBlock]:
    """The index rows of ``shapes``, one block per shape (rows z-scored for correlation)."""
    import numpy as np

    wanted = {shape_key(s): tuple(s) for s in shapes}
    blocks: dict[str, ShapeBlock] = {}
    if not wanted:
        return blocks
    query = select(
        WatermarkSketch.shape,
        WatermarkSketch.artifact_id,
        WatermarkSketch.secret_fingerprint,
        WatermarkSketch.values,
    ).where(WatermarkSketch.shape.in_(sorted(wanted)))
    grouped: dict[str, tuple[list[int], list[str], list[bytes]]] = {}
    for key, artifact_id, fp, values in session.execute(query):
        ids, fps, vals = grouped.setdefault(key, ([], [], []))
        ids.append(artifact_id)
        fps.append(fp)
        vals.append(values)
    for key, (ids, fps, vals) in grouped.items():
        size = min(len(v) for v in vals) // 4
        matrix = np.stack([np.frombuffer(v[: 4 * size], dtype="<f4") for v in vals])
        blocks[key] = ShapeBlock(wanted[key], np.asarray(ids), fps, zscores(matrix))
    return blocks


def indexed_shapes(
    session: Session, exclude: Iterable[tuple[int, ...]] = ()
) -> dict[int, list[tuple[int, ...]]]:
    """Artifact id -> the shapes it has index rows for, but those in ``exclude`` (no values)."""
    out: dict[int, list[tuple[int, ...]]] = {}
    query = select(WatermarkSketch.artifact_id, WatermarkSketch.shape)
    skip = sorted({shape_key(s) for s in exclude})
    if skip:
        query = query.where(WatermarkSketch.shape.not_in(skip))
    for artifact_id, key in session.execute(query):
        out.setdefault(artifact_id, []).append(tuple(int(d) for d in key.split("x")))
    return out

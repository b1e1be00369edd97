"""The pure sketch maths: fixed positions, z-scores, and ranking versions by their sketches."""

from __future__ import annotations

import numpy as np

from assay.watermark.sketch import (
    SKETCH_SIZE,
    ShapeBlock,
    rank,
    shape_key,
    sketch,
    sketch_indices,
    zscores,
)


def test_positions_are_fixed_per_shape_and_distinct() -> None:
    a, b = sketch_indices((64, 32)), sketch_indices((64, 32))
    assert np.array_equal(a, b) and len(set(a.tolist())) == SKETCH_SIZE
    assert not np.array_equal(a, sketch_indices((32, 64)))
    assert len(sketch_indices((4, 4))) == 16  # a small tensor: every element once


def test_sketch_reads_the_values_at_those_positions() -> None:
    w = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)
    out = sketch({"w": w})["w"]
    assert out["shape"] == [64, 32]
    assert out["values"] == [float(i) for i in sketch_indices((64, 32))]


def test_zscores_keep_float_dtype_and_zero_constant_rows() -> None:
    rows = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    z = zscores(rows)
    assert z.dtype == np.float64
    np.testing.assert_allclose(z[0], [-1.224745, 0.0, 1.224745], rtol=1e-5)
    assert not z[1].any()
    assert zscores(np.array([[1, 2]])).dtype == np.float32


def test_rank_scores_the_version_whose_sketch_the_suspect_carries() -> None:
    rng = np.random.default_rng(0)
    sketches = rng.normal(size=(50, SKETCH_SIZE)).astype(np.float32)
    block = ShapeBlock((64, 32), np.arange(100, 150), ["fp"] * 50, zscores(sketches))
    suspect = sketches[17] + rng.normal(0, 0.3, SKETCH_SIZE).astype(np.float32)
    scores = rank({shape_key((64, 32)): block}, {shape_key((64, 32)): zscores(suspect[None])})
    assert max(scores, key=scores.__getitem__) == 117
    assert scores[117] > 0.9 and sorted(scores.values())[-2] < 0.3
    assert rank({"8x8": block}, {shape_key((64, 32)): zscores(suspect[None])}) == {}

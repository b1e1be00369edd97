"""Patterns, embedding and the record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from assay.core.errors import FormatError
from assay.watermark.scheme import (
    DEFAULT_STRENGTH,
    WatermarkError,
    WatermarkRecord,
    canonical,
    embed,
    fingerprint,
    fold,
    pattern,
    pattern_signs,
    unmark,
)

SECRET = b"0123456789abcdef-secret"


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a.weight": rng.normal(0, 0.05, (300, 64)).astype(np.float32),
        "a.bias": rng.normal(0, 0.05, 300).astype(np.float32),
        "b.weight": rng.normal(0, 0.05, (128, 128)).astype(np.float32),
        "conv.weight": rng.normal(0, 0.1, (16, 8, 3, 3)).astype(np.float32),
        "tiny": rng.normal(0, 1, (4, 4)).astype(np.float32),
    }


def test_pattern_is_keyed_balanced_and_name_free() -> None:
    c = canonical((300, 64))
    assert c.shape == (64, 300) and c.transposed
    p = pattern(SECRET, c)
    assert p.dtype == np.int8 and set(np.unique(p)) == {-1, 1}
    assert abs(float(p.mean())) < 0.02
    assert np.array_equal(
        p, pattern(SECRET, canonical((64, 300)))
    )  # transposed tensor, same pattern
    assert not np.array_equal(p, pattern(b"another-secret-of-16b", c))
    sq = pattern(SECRET, canonical((128, 128)))
    assert np.array_equal(sq, sq.T)  # square: orientation-free


def test_fold_matches_full_correlation() -> None:
    c = canonical((50, 50))
    x = np.random.default_rng(1).normal(size=(50, 50))
    assert np.isclose(
        float(np.sum(x * pattern(SECRET, c))), float(fold(x, c) @ pattern_signs(SECRET, c))
    )


def test_embed_changes_only_selected_tensors_and_keeps_dtype() -> None:
    t = _tensors()
    res = embed(t, SECRET)
    assert set(res.tensors) == {"a.weight", "b.weight", "conv.weight"}  # no biases, nothing tiny
    for name, marked in res.tensors.items():
        assert marked.dtype == t[name].dtype and marked.shape == t[name].shape
        delta = marked.astype(np.float64) - t[name]
        amp = DEFAULT_STRENGTH * float(np.std(t[name], dtype=np.float64))
        assert np.allclose(np.abs(delta), amp, rtol=1e-3, atol=1e-7)
    rec = res.record
    assert rec.marked == 300 * 64 + 128 * 128 + 16 * 8 * 9
    again = WatermarkRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert again == rec
    assert SECRET.hex() not in json.dumps(rec.to_dict()) and rec.secret_fingerprint == fingerprint(
        SECRET
    )


def test_unmark_restores_original_and_checks_key() -> None:
    t = _tensors()
    res = embed(t, SECRET)
    orig = unmark(res.tensors, SECRET, res.record)
    for name, back in orig.items():
        assert np.allclose(back, t[name], atol=1e-7)
    with pytest.raises(WatermarkError):
        unmark(res.tensors, b"wrong-secret-0123456789", res.record)


def test_selection_and_errors() -> None:
    t = _tensors()
    assert set(embed(t, SECRET, select=["tiny"]).tensors) == {"tiny"}
    assert set(embed(t, SECRET, select=lambda n, a: n.startswith("b")).tensors) == {"b.weight"}
    with pytest.raises(WatermarkError):
        embed(t, b"short")
    with pytest.raises(WatermarkError):
        embed(t, SECRET, strength=0.0)
    with pytest.raises(WatermarkError):
        embed(t, SECRET, select=["a.bias"])
    with pytest.raises(FormatError):
        WatermarkRecord.from_dict({"scheme": "assay-wm/1"})

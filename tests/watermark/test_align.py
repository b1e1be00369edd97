"""Re-alignment of permuted, rescaled and split units."""

from __future__ import annotations

import time

import numpy as np

from assay.watermark.align import align_chain, align_rows


def _chain(rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.normal(size=(120, 40)), rng.normal(size=(80, 120)), rng.normal(size=(10, 80))]


def test_permutation_and_signed_scales_are_undone() -> None:
    rng = np.random.default_rng(0)
    r = _chain(rng)
    p1, p2 = rng.permutation(120), rng.permutation(80)
    c1 = rng.uniform(0.3, 3, 120) * rng.choice([-1, 1], 120)
    c2 = rng.uniform(0.3, 3, 80)
    s = [r[0][p1] * c1[:, None], r[1][p2][:, p1] / c1 * c2[:, None], r[2][:, p2] / c2]
    for a, ref in zip(align_chain(s, r), r, strict=True):
        assert np.allclose(a.weight, ref)


def test_split_and_dummy_units_are_merged_and_dropped() -> None:
    rng = np.random.default_rng(1)
    r = _chain(rng)
    s0 = np.vstack([r[0], 0.5 * r[0][:7], rng.normal(size=(5, 40))])
    s1 = np.hstack([r[1], np.zeros((80, 12))])
    s1[:, :7] = 0.25 * r[1][:, :7]
    s1[:, 120:127] = 1.5 * r[1][:, :7]  # 0.25 + 0.5 * 1.5 = 1
    out = align_chain([s0, s1, r[2]], r)
    assert int(np.sum(out[0].units.index < 0)) == 5
    for a, ref in zip(out, r, strict=True):
        assert np.allclose(a.weight, ref)


def test_fewer_units_are_reported_missing() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(size=(30, 20))
    aligned, units, missing, cos = align_rows(r[:25][::-1], r)
    assert missing.sum() == 5 and np.allclose(aligned[~missing], r[~missing])


def test_alignment_speed_4096(capsys) -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4096, 4096)).astype(np.float32)
    perm = rng.permutation(4096)
    t = time.perf_counter()
    out = align_chain([a[perm]], [a])
    dt = time.perf_counter() - t
    assert np.array_equal(out[0].weight, a)
    with capsys.disabled():
        print(f"\n[speed] align 4096x4096 layer: {dt:.2f} s")

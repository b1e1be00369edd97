"""The distribution-free tests: exact nulls, no underflow, corrections."""

from __future__ import annotations

import math

import numpy as np

from assay.watermark import stats


def test_matched_filter_bound_and_z() -> None:
    signs = np.array([1, -1, 1, 1], dtype=np.int8)
    r = stats.matched_filter(np.array([1.0, -1.0, 1.0, 1.0]), signs)
    assert math.isclose(r.z, 2.0)
    assert math.isclose(r.log_p, -2.0)
    assert stats.matched_filter(-np.ones(4), signs.astype(float)).log_p == 0.0
    assert stats.matched_filter(np.zeros(4), signs).log_p == 0.0


def test_sign_test_is_exact_binomial() -> None:
    from scipy.stats import binom

    c = np.array([1.0, 2.0, -3.0, 0.0, 5.0])
    s = np.array([1, 1, 1, 1, 1])
    r = stats.sign_test(c, s)  # 3 of 4 non-zero agree
    assert r.n == 4
    assert math.isclose(r.p, binom.sf(2, 4, 0.5))


def test_extreme_p_values_stay_in_log_space() -> None:
    n = 1_000_000
    lp = stats.binom_log_sf(n, n)
    assert math.isfinite(lp) and lp < -600_000  # 2^-1e6, far below float range
    mf = stats.matched_filter(np.ones(n), np.ones(n))
    assert mf.log10_p < -200_000
    assert stats.correct(mf.log_p, 1000) > mf.log_p


def test_combine_and_sidak() -> None:
    a = stats.TestResult(3.0, math.log(1e-4), 10)
    b = stats.TestResult(1.0, math.log(0.5), 10)
    assert math.isclose(math.exp(stats.combine(a, b)), 2e-4)
    assert math.isclose(math.exp(stats.correct(math.log(0.01), 10)), 1 - 0.99**10)
    assert math.isclose(math.exp(stats.correct(-100.0, 10)), math.exp(-100.0) * 10, rel_tol=1e-9)
    assert stats.correct(math.log(0.5), 100) == 0.0 or stats.correct(math.log(0.5), 100) > -1e-12


def test_null_is_calibrated_for_heavy_tailed_values() -> None:
    rng = np.random.default_rng(0)
    c = rng.standard_cauchy(5000)
    ps = []
    for _ in range(400):
        s = rng.choice(np.array([-1, 1], dtype=np.int8), 5000)
        ps.append(stats.combine(stats.matched_filter(c, s), stats.sign_test(c, s)))
    ps = np.exp(np.array(ps))
    for alpha in (0.1, 0.01):
        assert np.mean(ps <= alpha) <= alpha * 1.6 + 0.005

"""Distribution-free tests for a +-1 watermark pattern, computed in log space.

Both tests condition on the suspect: the observed values ``c`` (a residual, or centred weights) are
held fixed and the only randomness is the key. Under the null hypothesis (the suspect does not carry
*this* key's mark) the pattern ``P`` is a vector of independent fair signs, independent of ``c``. No
assumption about how weights are distributed is needed.

* Weighted matched filter: ``S = sum(c_i * P_i)``; Hoeffding gives ``P(S >= t) <= exp(-t^2 / (2 *
  sum c_i^2))``, so with ``z = S / ||c||`` the p-value is bounded by ``exp(-z^2 / 2)``. Any weighting or
  clipping of ``c`` that is a function of the suspect (and the key-independent original) keeps the
  bound valid.
* Sign agreement: among the ``n`` non-zero ``c_i`` the number ``k`` with ``sign(c_i) == P_i`` is
  exactly Binomial(n, 1/2) under the null.

``combine`` takes ``p = min(1, 2 * min(p_mf, p_sign))`` (Bonferroni over the two tests: each one alone
fails on some attack), and ``correct`` applies Sidak's correction for the number of candidates
searched. Everything is natural-log internally; ``log10`` is what reports show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LN10 = math.log(10.0)


@dataclass(frozen=True)
class TestResult:
    """One test's outcome: its statistic and its (one-sided) p-value as a natural log."""

    z: float
    log_p: float
    n: int

    @property
    def p(self) -> float:
        return math.exp(self.log_p)

    @property
    def log10_p(self) -> float:
        return self.log_p / LN10


#: Elements per step when a test walks its inputs: temporaries stay a few MB whatever the model.
CHUNK = 1 << 20


def matched_filter_parts(c: np.ndarray, signs: np.ndarray) -> tuple[float, float, int]:
    """``(sum(c * P), sum(c^2), count of non-zero c)``: additive over disjoint pieces."""
    c = np.asarray(c).ravel()
    s = np.asarray(signs).ravel()
    dot = sq = 0.0
    n = 0
    for i in range(0, c.size, CHUNK):
        ci = np.asarray(c[i : i + CHUNK], dtype=np.float64)
        dot += float(np.dot(ci, s[i : i + CHUNK].astype(np.float64)))
        sq += float(np.dot(ci, ci))
        n += int(np.count_nonzero(ci))
    return dot, sq, n


def matched_filter_from(dot: float, sq: float, n: int) -> TestResult:
    """The matched filter's result from its summed parts (see :func:`matched_filter_parts`)."""
    norm = math.sqrt(sq) if sq > 0 else 0.0
    if norm == 0.0 or not math.isfinite(norm):
        return TestResult(0.0, 0.0, n)
    z = dot / norm
    return TestResult(z, matched_filter_log_p(z), n)


def matched_filter(c: np.ndarray, signs: np.ndarray) -> TestResult:
    """Hoeffding-bounded matched filter of values ``c`` against +-1 ``signs`` (same length)."""
    return matched_filter_from(*matched_filter_parts(c, signs))


def matched_filter_log_p(z: float) -> float:
    """``log`` of the Hoeffding bound ``exp(-z^2/2)`` for a one-sided ``z`` (1 when ``z <= 0``)."""
    return -0.5 * z * z if z > 0 else 0.0


def sign_parts(c: np.ndarray, signs: np.ndarray) -> tuple[int, int]:
    """``(agreements, non-zero count)`` of the sign test: additive over disjoint pieces."""
    c = np.asarray(c).ravel()
    s = np.asarray(signs).ravel()
    k = n = 0
    for i in range(0, c.size, CHUNK):
        ci, si = c[i : i + CHUNK], s[i : i + CHUNK]
        nz = ci != 0
        n += int(np.count_nonzero(nz))
        k += int(np.count_nonzero(nz & ((ci > 0) == (si > 0))))
    return k, n


def sign_test_from(k: int, n: int) -> TestResult:
    """The sign test's result from ``k`` agreements among ``n`` non-zero values."""
    if n == 0:
        return TestResult(0.0, 0.0, 0)
    return TestResult((2.0 * k - n) / math.sqrt(n), binom_log_sf(k, n), n)


def sign_test(c: np.ndarray, signs: np.ndarray) -> TestResult:
    """Exact binomial test of sign agreement between ``c`` and ``signs`` (zeros are ties, dropped)."""
    return sign_test_from(*sign_parts(c, signs))


def binom_log_sf(k: int, n: int) -> float:
    """``log P(X >= k)`` for ``X ~ Binomial(n, 1/2)``; never underflows to ``-inf`` wrongly.

    Uses scipy's exact binomial tail (``scipy.special.bdtrc``); where that is not finite it falls back to the Chernoff bound
    ``-n * KL(k/n || 1/2)``, which is an upper bound on the p-value (so conservative).
    """
    if k <= 0:
        return 0.0
    if k > n:
        return -math.inf
    from scipy.special import bdtrc  # what scipy.stats.binom.sf computes, without its import

    sf = float(bdtrc(k - 1, n, 0.5))
    val = math.log(sf) if sf > 0 else -math.inf
    if math.isfinite(val):
        return min(0.0, val)
    q = k / n
    kl = q * math.log(2 * q) + ((1 - q) * math.log(2 * (1 - q)) if q < 1 else 0.0)
    return -n * kl


def combine(*results: TestResult) -> float:
    """Bonferroni over several one-sided tests: ``log min(1, m * min(p_i))``."""
    best = min(r.log_p for r in results)
    return min(0.0, best + math.log(len(results)))


def correct(log_p: float, m: int) -> float:
    """Sidak correction of ``log p`` for ``m`` hypotheses searched: ``log(1 - (1 - p)^m)``."""
    if m <= 1:
        return min(0.0, log_p)
    if log_p < -30.0:  # (1-p)^m ~ 1 - m p to far better than float precision
        return min(0.0, log_p + math.log(m))
    p = math.exp(log_p)
    if p >= 1.0:
        return 0.0
    return min(0.0, math.log(-math.expm1(m * math.log1p(-p))))


def z_from_log_p(log_p: float) -> float:
    """The ``z`` whose Hoeffding bound equals ``p``: ``sqrt(-2 log p)`` (0 for p = 1)."""
    return math.sqrt(-2.0 * log_p) if log_p < 0 else 0.0

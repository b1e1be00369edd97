"""The PRADA-style detector on its own: benign replayed test-set traffic vs synthetic queries."""

from __future__ import annotations

import numpy as np
import pytest

from assay.serving._extraction import ClientHistory, shapiro_w
from assay.trust.serving_policy import ExtractionPolicy

POLICY = ExtractionPolicy()  # threshold 0.90, min_queries 50


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)[0]


def first_flag(queries: np.ndarray, policy: ExtractionPolicy = POLICY) -> int | None:
    history = ClientHistory(policy.window)
    for i, row in enumerate(queries):
        history.observe([row])
        if history.finding(policy) is not None:
            return i
    return None


def jbda(seeds: np.ndarray, n: int, rng: np.random.Generator, step: float = 1.0) -> np.ndarray:
    """Synthetic queries as the Jacobian-based augmentation makes them: small signed steps away
    from earlier queries."""
    queries = list(seeds)
    while len(queries) < n:
        base = queries[rng.integers(len(queries))]
        queries.append(np.clip(base + step * rng.choice([-1.0, 1.0], base.shape), 0, 16))
    return np.array(queries)


def test_benign_clients_are_not_flagged(digits: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    flagged = [first_flag(digits[rng.permutation(len(digits))[:400]]) for _ in range(20)]
    assert flagged == [None] * 20


def test_synthetic_queries_are_flagged_early(digits: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    for _ in range(5):
        seeds = digits[rng.permutation(len(digits))[:10]]
        at = first_flag(jbda(seeds, 400, rng))
        assert at is not None and at < 100


def test_exact_repeats_do_not_count() -> None:
    history = ClientHistory(100)
    history.observe(np.ones((30, 4)))
    assert len(history.distances) == 0 and history.finding(POLICY, force=True) is None


def test_window_bounds_memory_and_width_change_restarts() -> None:
    rng = np.random.default_rng(3)
    history = ClientHistory(50)
    history.observe(rng.normal(size=(500, 8)))
    assert len(history.queries) == 50 and len(history.distances) == 50
    history.observe(rng.normal(size=(1, 3)))
    assert len(history.queries) == 1 and len(history.distances) == 0


def test_shapiro_w_edges() -> None:
    assert shapiro_w([1.0, 2.0]) == 1.0
    assert shapiro_w([2.0] * 10) == 0.0
    assert 0.9 < shapiro_w(np.random.default_rng(4).normal(size=500)) <= 1.0

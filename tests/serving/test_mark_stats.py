"""The behavioural trace's statistic (serving/_mark_stats.py) and perturbation marks.

Calibration: suspects that never saw the marks (their answers do not depend on the key), each
against the marks of an independent key, must reach p <= alpha at most about alpha of the time,
for label answers, score rows and regression answers. Power: copies that learnt the marks are
named. Repeated inputs count once.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.serving._answer_marks import AnswerMarker
from assay.serving._mark_stats import is_perturbation, score_marks, unique_marks


class _Classifier:
    name, version, labels = "m", "1", tuple(range(10))


class _Regressor:
    name, version, labels = "r", "1", ()


def _marks(records: list[dict]) -> list[tuple]:
    return [
        (json.loads(m["input"]), json.loads(m["answer"]), json.loads(m["original"]))
        for m in records
    ]


def _label_world(seed: int, n: int = 3000, fraction: float = 0.02):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, 6))
    own = (rows[:, 0] * 3).astype(int) % 10  # a deterministic "served model"
    out, records = AnswerMarker(os.urandom(32)).apply(_Classifier(), "c", rows, own, fraction)
    return rows, own, out, _marks(records)


def _fpr(pvalues: list[float], alpha: float) -> float:
    return float(np.mean(np.array(pvalues) <= math.log10(alpha)))


@pytest.mark.parametrize("kind", ["label", "scores"])
def test_label_tests_are_calibrated_on_independent_suspects(kind: str) -> None:
    ps = []
    for seed in range(200):
        rows, own, _, marks = _label_world(seed, n=600, fraction=0.08)
        x = np.array([m[0] for m in marks])
        noise = np.random.default_rng(10_000 + seed)
        if kind == "label":  # agrees with the model 70 % of the time, otherwise any label
            answers = [
                int(o) if noise.random() < 0.7 else int(noise.integers(10))
                for o in (x[:, 0] * 3).astype(int) % 10
            ]
        else:  # score rows peaked on the model's answer, noise elsewhere
            answers = []
            for o in (x[:, 0] * 3).astype(int) % 10:
                scores = noise.normal(size=10)
                scores[o] += 3
                answers.append(scores.tolist())
        score = score_marks(answers, marks)
        assert score.test == kind and 2 < score.labels <= 10  # seen in the marks: <= K
        ps.append(score.log10_p)
    assert _fpr(ps, 0.05) <= 0.05 + 0.04  # binomial slack over 200 draws (sd 1.5 %)
    assert _fpr(ps, 0.01) <= 0.01 + 0.02
    assert min(ps) > -6


def test_copies_of_the_marks_are_named() -> None:
    _, _, out, marks = _label_world(0, n=3000, fraction=0.01)
    copy = [m[1] for m in marks]  # answers the marked labels
    score = score_marks(copy, marks)
    assert score.trials == score.agreed == len(marks) and score.log10_p < -9
    partial = []  # own answer on top, the marked label second: only the score test sees it
    for _, marked, own in marks:
        scores = [0.0] * 10
        scores[own], scores[marked] = 2.0, 1.0
        partial.append(scores)
    assert score_marks(partial, marks).log10_p < -9
    assert score_marks([m[2] for m in marks], marks).trials == 0  # the model itself: no trials


def test_repeated_inputs_count_once() -> None:
    _, _, _, marks = _label_world(1)
    assert unique_marks(marks * 5) == unique_marks(marks)


def test_perturbation_marks_are_keyed_bounded_and_repeatable() -> None:
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(4000, 5))
    for own in (rows @ np.arange(1.0, 6.0) + 10, rows @ rng.normal(size=(5, 16))):
        marker = AnswerMarker(b"k" * 32)
        out, records = marker.apply(_Regressor(), "c", rows, own, 0.05, 0.05)
        again, _ = marker.apply(_Regressor(), "c", rows, own, 0.05, 0.05)
        assert (out == again).all() and 100 < len(records) < 300
        changed = np.nonzero((out != own).reshape(len(rows), -1).any(axis=1))[0]
        assert len(changed) == len(records)
        diff = (out - own).reshape(len(rows), -1)[changed]
        scale = np.linalg.norm(own.reshape(len(rows), -1)[changed], axis=1)
        assert np.allclose(np.linalg.norm(diff, axis=1), 0.05 * scale)
        marks = _marks(records)
        assert all(is_perturbation(m) for m in marks)
        assert marks[0][1] == out[changed[0]].tolist()  # the record is what was answered
        assert marker.apply(_Regressor(), "c", rows, own, 0.05, 0.0)[1] == []  # bound 0: off
        assert marker.apply(_Classifier(), "c", rows, own, 0.05, 0.05)[1] == []  # float labels


def test_direction_test_is_calibrated_and_names_a_copy() -> None:
    ps, copies = [], []
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(600, 4))
    own = rows @ np.array([2.0, -1.0, 0.5, 3.0]) + 5
    for seed in range(200):
        marker = AnswerMarker(os.urandom(32))
        _, records = marker.apply(_Regressor(), "c", rows, own, 0.08, 0.05)
        marks = _marks(records)
        noise = np.random.default_rng(20_000 + seed)
        independent = [m[2] + float(noise.normal(0, 0.5)) for m in marks]  # its own errors
        score = score_marks(independent, marks)
        assert score.test == "direction" and score.p0 == 0.5
        ps.append(score.log10_p)
        if seed < 5:  # a copy: its error around the answers it was taught
            learnt = [m[1] + float(noise.normal(0, 0.02 * abs(m[1]))) for m in marks]
            copies.append(score_marks(learnt, marks).log10_p)
    assert _fpr(ps, 0.05) <= 0.05 + 0.04 and _fpr(ps, 0.01) <= 0.01 + 0.02
    assert max(copies) < -9


@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 9)), min_size=0, max_size=60
    ),
)
@settings(max_examples=200, deadline=None)
def test_label_score_is_bounded_and_consistent(triples: list[tuple[int, int, int]]) -> None:
    marks = [([float(i)], marked, own) for i, (_, marked, own) in enumerate(triples)]
    answers = [got for got, _, _ in triples]
    score = score_marks(answers, marks)
    assert 0 <= score.agreed <= score.trials <= score.marks == len(marks)
    assert score.log10_p <= 0.0 and 0.0 < score.p0 <= 1.0

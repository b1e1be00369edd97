"""The statistic of the behavioural trace: how often a suspect reproduces recorded answer marks,
against the exact chance of doing so without having learnt them.

Each mark is (input, marked answer, the model's own answer); the key chose the mark
independently of any model not trained on it, which gives exact one-sided binomial tests:

* **label marks** (classification; the marked label ``L`` is uniform among the ``K - 1`` labels
  other than the own answer):

  - a suspect that answers a *label* ``s``: when ``s`` is the own answer it cannot agree; when
    it is not, ``P(s = L) = 1 / (K - 1)``. So the trials are the marks whose answer differs from
    the own answer, and ``agreed ~ Binomial(trials, 1 / (K - 1))`` (conditional on the suspect's
    answers, which do not depend on the key);
  - a suspect that answers *scores* (a row per input, column ``j`` = label ``j``, as the argmax
    reading takes them): its top label among those other than the own answer is ``L`` with
    probability ``1 / (K - 1)``, on every mark; a copy that learnt the mark only partly (own
    answer still on top, the marked label second) still counts.

  ``K`` is the number of labels seen in the marks, never more than the model's, so the null is
  never easier than the truth; binary classifiers (``K = 2``) carry no evidence this way.

* **perturbation marks** (regression / embeddings; the marked answer is ``y + d``, ``d`` of a
  keyed sign pattern, ``-d`` as likely as ``d``): the suspect's answer ``z`` agrees when
  ``<z - y, d> > 0``; ties carry no evidence and are dropped; ``agreed ~ Binomial(trials, 1/2)``.

Marks recorded more than once (a repeated input) count once: repeats are not independent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["MarkScore", "is_perturbation", "log10_binom_tail", "score_marks", "unique_marks"]


@dataclass(frozen=True)
class MarkScore:
    test: str  # "label", "scores" or "direction"
    marks: int  # distinct marked inputs replayed
    trials: int  # binomial trials
    agreed: int
    labels: int  # K for label marks, 0 for perturbation marks
    p0: float  # chance of agreement per trial under the null
    log10_p: float


def log10_binom_tail(agreed: int, n: int, p0: float) -> float:
    """log10 P(X >= agreed) for X ~ Binomial(n, p0)."""
    from scipy.stats import binom

    if agreed <= 0 or p0 >= 1.0:
        return 0.0
    return min(0.0, float(binom.logsf(agreed - 1, n, p0)) / math.log(10))


def _numbers(value: Any) -> list[float] | None:
    """``value`` as a flat list of floats (a number is a list of one), or None for a label."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return [value]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return [float(v) for v in value]
    return None


def is_perturbation(mark: Any) -> bool:
    """A perturbation mark stores float answers (label marks never do: float answers are not
    marked as labels)."""
    _, marked, own = mark
    return (
        isinstance(marked, (float, list))
        and _numbers(marked) is not None
        and (_numbers(own) is not None)
    )


def unique_marks(marks: list[Any]) -> list[Any]:
    """The first record of each distinct input."""
    seen: set[str] = set()
    out = []
    for mark in marks:
        key = json.dumps(mark[0])
        if key not in seen:
            seen.add(key)
            out.append(mark)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return str(a) == str(b)


def _top_other(scores: list[float], own: Any) -> int | None:
    """The highest-scoring column other than ``own`` (lowest index on ties)."""
    skip = int(own) if isinstance(own, int) and not isinstance(own, bool) else None
    best = None
    for j, v in enumerate(scores):
        if j != skip and math.isfinite(v) and (best is None or v > scores[best]):
            best = j
    return best


def _score_labels(answers: list[Any], marks: list[Any]) -> MarkScore:
    labels = len({json.dumps(m[1]) for m in marks} | {json.dumps(m[2]) for m in marks})
    p0 = 1.0 / max(1, labels - 1)
    trials = agreed = 0
    with_scores = False
    for got, (_, marked, own) in zip(answers, marks, strict=True):
        scores = _numbers(got) if isinstance(got, list) else None
        if scores is not None:
            with_scores = True
            top = _top_other(scores, own)
            trials += 1
            agreed += top is not None and _same(top, marked)
        elif not _same(got, own):
            trials += 1
            agreed += _same(got, marked)
    return MarkScore(
        "scores" if with_scores else "label",
        len(marks),
        trials,
        agreed,
        labels,
        p0,
        log10_binom_tail(agreed, trials, p0),
    )


def _score_directions(answers: list[Any], marks: list[Any]) -> MarkScore:
    trials = agreed = 0
    for got, (_, marked, own) in zip(answers, marks, strict=True):
        z, m, y = _numbers(got), _numbers(marked), _numbers(own)
        if z is None or m is None or y is None or not len(z) == len(m) == len(y):
            continue  # an answer of another shape: no evidence either way
        dot = sum((zi - yi) * (mi - yi) for zi, mi, yi in zip(z, m, y, strict=True))
        if dot != 0 and math.isfinite(dot):
            trials += 1
            agreed += dot > 0
    return MarkScore(
        "direction", len(marks), trials, agreed, 0, 0.5, log10_binom_tail(agreed, trials, 0.5)
    )


def score_marks(answers: list[Any], marks: list[Any]) -> MarkScore:
    """The score of a suspect's raw ``answers`` (labels, score rows, or numbers) to ``marks``
    (input, marked, own), one answer per mark: the one implementation of the statistic (the
    trace and benchmarks/bench_extraction.py). Pass :func:`unique_marks` first."""
    if len(answers) != len(marks):
        raise ValueError(f"{len(answers)} answers for {len(marks)} marks")
    if marks and all(is_perturbation(m) for m in marks):
        return _score_directions(answers, marks)
    return _score_labels(answers, marks)

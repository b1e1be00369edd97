"""Pair a suspect's tensors with the reference's by shape and content, never by name.

Export renames tensors (``onnx::MatMul_28``, ``val_13``) and stores ``Linear`` weights transposed,
and an attacker may add units (so a dimension grows). A suspect tensor is a candidate for a
reference tensor when, in one orientation (as stored, or transposed for 2-D), it has the same
number of dimensions, the same kernel dimensions, and output/input sizes at least the reference's
(at most ``max_growth`` times). Candidates are scored by content and the pairing that maximises the
total score is taken (Hungarian assignment), so equal shapes are told apart by their values:

* identical oriented shape: ``|correlation|`` of the values as they are (a copy that was not
  permuted scores near 1);
* always: similarity of the sorted, standardised magnitudes (invariant to permutation and sign
  flips; a weak tie-breaker when units were rescaled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from assay.watermark.align import AlignedLayer, align_chain, links_to

MAX_GROWTH = 4.0
_PROFILE = 257
_CORR_SAMPLE = 65_536  # values sampled for the profile and the correlation of large tensors


@dataclass(frozen=True)
class TensorMatch:
    """``suspect`` (read transposed when ``transposed``) stands for ``reference``."""

    reference: str
    suspect: str
    transposed: bool
    score: float


def weight_tensors(tensors: Mapping[str, np.ndarray]) -> list[str]:
    """Names of the float tensors with at least two dimensions (the ones matching considers)."""
    return [
        n
        for n, a in tensors.items()
        if np.asarray(a).ndim >= 2 and np.issubdtype(np.asarray(a).dtype, np.floating)
    ]


def _fits(s: tuple[int, ...], r: tuple[int, ...], max_growth: float) -> bool:
    if len(s) != len(r) or s[2:] != r[2:]:
        return False
    return all(rd <= sd <= max_growth * rd for sd, rd in zip(s[:2], r[:2], strict=True))


def _profile(a: np.ndarray) -> np.ndarray:
    v = np.abs(np.asarray(a, dtype=np.float64).ravel())
    if v.size > _CORR_SAMPLE:
        v = v[:: v.size // _CORR_SAMPLE]
    q = np.quantile(v, np.linspace(0.0, 1.0, _PROFILE)[1:-1])
    rms = np.sqrt(np.mean(v * v))
    return q / rms if rms > 0 else q


def _unit(a: np.ndarray) -> np.ndarray:
    """Centred, unit-norm values of ``a`` (a fixed strided sample of large tensors), for ``_corr``.

    Computed once per tensor and orientation: correlating every same-shape pair from scratch was
    most of the detection time on a transformer (hundreds of equal-shape pairs).
    """
    v = np.asarray(a).ravel()
    if v.size > _CORR_SAMPLE:
        v = v[:: v.size // _CORR_SAMPLE][:_CORR_SAMPLE]
    v = v.astype(np.float64)
    v = v - v.mean()
    n = float(np.sqrt(v @ v))
    return v / n if n > 0 else v


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    d = np.sqrt((a @ a) * (b @ b))
    return float(abs(a @ b) / d) if d > 0 else 0.0


def candidates(
    s_shape: tuple[int, ...], r_shape: tuple[int, ...], max_growth: float = MAX_GROWTH
) -> list[bool]:
    """Orientations (``transposed`` flags) in which a suspect shape can stand for a reference shape."""
    out = []
    if _fits(s_shape, r_shape, max_growth):
        out.append(False)
    if len(s_shape) == 2 and _fits(s_shape[::-1], r_shape, max_growth):
        out.append(True)
    return out


def match_tensors(
    suspect: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    *,
    reference_names: list[str] | None = None,
    max_growth: float = MAX_GROWTH,
) -> list[TensorMatch]:
    """Pair reference tensors (``reference_names``, default every weight tensor) with suspect ones."""
    from scipy.optimize import linear_sum_assignment

    r_names = reference_names if reference_names is not None else weight_tensors(reference)
    s_names = weight_tensors(suspect)
    if not r_names or not s_names:
        return []
    score = np.full((len(r_names), len(s_names)), -np.inf)
    orient = np.zeros(score.shape, dtype=bool)
    s_prof = {n: _profile(suspect[n]) for n in s_names}
    s_unit: dict[tuple[str, bool], np.ndarray] = {}
    for i, rn in enumerate(r_names):
        r = np.asarray(reference[rn])
        r_prof = _profile(r)
        r_unit: np.ndarray | None = None
        for j, sn in enumerate(s_names):
            s = np.asarray(suspect[sn])
            for transposed in candidates(tuple(s.shape), tuple(r.shape), max_growth):
                so = s.T if transposed else s
                sc = 1.0 - min(1.0, float(np.mean(np.abs(s_prof[sn] - r_prof))))
                if so.shape == r.shape:
                    if r_unit is None:
                        r_unit = _unit(r)
                    su = s_unit.get((sn, transposed))
                    if su is None:
                        su = s_unit[(sn, transposed)] = _unit(so)
                    sc += 1.0 + 2.0 * abs(float(su @ r_unit))  # exact fit beats a grown one
                if not transposed:
                    sc += 1e-3  # equal otherwise: prefer the orientation as stored
                if sc > score[i, j]:
                    score[i, j] = sc
                    orient[i, j] = transposed
    finite = np.isfinite(score)
    cost = np.where(finite, -score, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return [
        TensorMatch(r_names[i], s_names[j], bool(orient[i, j]), float(score[i, j]))
        for i, j in zip(rows, cols, strict=True)
        if finite[i, j]
    ]


@dataclass(frozen=True)
class AlignedPair:
    """A reference tensor, the suspect tensor paired with it, and the suspect re-aligned onto it."""

    reference: str
    match: TensorMatch
    layer: AlignedLayer


def orient(a: np.ndarray, in_first: bool) -> np.ndarray:
    """``(out, in)`` view of a 2-D weight stored ``(in, out)`` when ``in_first``."""
    return a.T if (in_first and a.ndim == 2) else a


def align_models(
    suspect: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    reference_names: list[str] | None = None,
) -> tuple[list[AlignedPair], bool, list[str]]:
    """Pair tensors, then re-align the suspect along the reference's chain of layers.

    The chain is the reference's weight tensors in their stored order; a layer is linked to the
    next when its output size is the next one's input size. 2-D weights are read ``(out, in)``, or
    ``(in, out)`` when that orientation links more layers (ONNX / Keras layout); the returned
    ``in_first`` says which, and aligned weights are in that ``(out, in)`` orientation.
    """
    names = reference_names if reference_names is not None else weight_tensors(reference)
    matches = {m.reference: m for m in match_tensors(suspect, reference, reference_names=names)}
    chain = [n for n in names if n in matches]

    def n_links(in_first: bool) -> int:
        shapes = [orient(np.asarray(reference[n]), in_first).shape for n in chain]
        return sum(links_to(a, b) for a, b in zip(shapes, shapes[1:], strict=False))

    in_first = n_links(True) > n_links(False)
    notes = ["reference stores 2-D weights as (in, out)"] if in_first else []
    s_list, r_list = [], []
    for n in chain:
        m = matches[n]
        s = np.asarray(suspect[m.suspect])
        s_list.append(orient(s.T if m.transposed else s, in_first))
        r_list.append(orient(np.asarray(reference[n]), in_first))
    layers = align_chain(s_list, r_list) if chain else []
    pairs = [AlignedPair(n, matches[n], layer) for n, layer in zip(chain, layers, strict=True)]
    return pairs, in_first, notes

"""Undo neuron permutation, per-unit scaling and unit splitting before correlating.

A network computes the same function after its hidden units are permuted, after a unit's incoming
weights are multiplied by ``c > 0`` and its outgoing weights by ``1/c`` (ReLU), after BatchNorm is
folded into a convolution (a per-channel scale of either sign), and after a unit is split into
several whose incoming weights are multiples of the original and whose outgoing weights sum to the
original's ("neuron splitting", NSO) or padded with dummy units that contribute nothing. Each of these
leaves the watermark in place but moves it, so a naive correlation scores ``z ~ 0``.

``align_chain`` walks a chain of layers (dense ``(out, in)`` or conv ``(out, in, *kernel)``, each
feeding the next), and for each layer:

1. rewrites the suspect's input axis in the reference's coordinates with the previous layer's unit map
   (``E[:, j] = sum over suspect units u mapped to j of S[:, u] * scale[u]``; units mapped nowhere are
   dropped). This merges split units and removes the previous layer's permutation and scales;
2. matches the suspect's output units (rows of ``E``) to the reference's by Hungarian assignment on
   ``|cosine|`` (so negative scales match), on a rectangular cost when the suspect has more units;
   mutual best matches are taken directly and only the rest goes to ``linear_sum_assignment``, and
   very wide layers compare rows on a fixed subsample of columns (exact cosines are recomputed for
   the chosen pairs);
3. gives each left-over suspect unit to the reference unit it is most similar to when ``|cosine|``
   is at least ``merge_threshold`` (a split copy), else marks it a dummy;
4. estimates each unit's signed scale by least squares against the reference row and writes the
   aligned row ``sum(scale_u * E_u) / sum(scale_u^2)`` over the units mapped to it.

Alignment only ever looks at the suspect and the *unmarked* reference, never the key, so choosing
it cannot manufacture evidence for the watermark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MERGE_THRESHOLD = 0.6
_DENSE_BUDGET = 2.0e8  # multiply-adds above which row similarity uses a column subsample
_SUBSAMPLE = 384


@dataclass
class UnitMap:
    """For each suspect unit, the reference unit it stands for (``-1``: dummy) and its scale."""

    index: np.ndarray
    scale: np.ndarray
    n_ref: int

    @classmethod
    def identity(cls, n: int) -> UnitMap:
        return cls(np.arange(n), np.ones(n), n)

    @property
    def is_identity(self) -> bool:
        return (
            len(self.index) == self.n_ref
            and bool(np.all(self.index == np.arange(self.n_ref)))
            and bool(np.allclose(self.scale, 1.0))
        )


@dataclass
class AlignedLayer:
    """One layer of the suspect in the reference's coordinates (float64, reference shape).

    ``missing`` flags reference rows no suspect unit stood for (their values are 0 and carry no
    evidence); ``cosine`` is each reference row's cosine with its aligned suspect row.
    """

    weight: np.ndarray
    units: UnitMap
    missing: np.ndarray
    cosine: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def mean_cosine(self) -> float:
        ok = ~self.missing
        return float(np.mean(self.cosine[ok])) if ok.any() else 0.0


def _float(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def merge_inputs(s3: np.ndarray, units: UnitMap) -> np.ndarray:
    """Rewrite axis 1 of ``s3`` (``(out, in_s, k)``) in reference coordinates: ``(out, n_ref, k)``."""
    s3 = _float(s3)
    out = np.zeros((s3.shape[0], units.n_ref, s3.shape[2]), dtype=s3.dtype)
    valid = np.flatnonzero(units.index >= 0)
    idx = units.index[valid]
    scale = units.scale.astype(s3.dtype)
    uniq, first = np.unique(idx, return_index=True)
    out[:, idx[first], :] = s3[:, valid[first], :] * scale[valid[first]][None, :, None]
    for i in np.setdiff1d(np.arange(len(idx)), first):  # split units (rare): add their share
        out[:, idx[i], :] += s3[:, valid[i], :] * scale[valid[i]]
    return out


#: Median row |cosine| above which stored order is taken as the alignment.
IDENTITY_THRESHOLD = 0.5
#: Above this many (suspect row, reference row) pairs no permutation search is made.
MAX_ASSIGN_PAIRS = 8192 * 8192


def _unit_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))
    safe = np.where(norms > 0, norms, 1.0)
    return a / safe[:, None], norms


def _similarity(e: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``|cosine|`` between every suspect row and every reference row (float32)."""
    d = e.shape[1]
    if e.shape[0] * r.shape[0] * d > _DENSE_BUDGET and d > _SUBSAMPLE:
        cols = np.random.default_rng(0).choice(d, _SUBSAMPLE, replace=False)  # fixed, key-free
        e, r = e[:, cols], r[:, cols]
    en, _ = _unit_rows(e.astype(np.float32))
    rn, _ = _unit_rows(r.astype(np.float32))
    return np.abs(en @ rn.T)


def _identity_fits(e: np.ndarray, r: np.ndarray) -> bool:
    """True when row i of the suspect already corresponds to row i of the reference.

    Checked on the rows' ``|cosine|`` in stored order (O(n d)): an un-permuted copy, even
    fine-tuned, pruned or quantized, keeps most rows pointing the same way (median well above
    0.5), while a permuted or unrelated layer scores near 0. Skipping the assignment then saves
    an ``n x n`` similarity matrix, which for a 30,522-row embedding table would be gigabytes.
    """
    if e.shape != r.shape:
        return False
    en, _ = _unit_rows(e.astype(np.float32))
    rn, _ = _unit_rows(r.astype(np.float32))
    diag = np.abs(np.einsum("ij,ij->i", en, rn))
    return float(np.median(diag)) >= IDENTITY_THRESHOLD


def _assign(sim: np.ndarray) -> np.ndarray:
    """Assignment maximising total similarity: ``match[s] = r`` or ``-1``."""
    n_s, n_r = sim.shape
    match = np.full(n_s, -1, dtype=np.int64)
    best_r = np.argmax(sim, axis=1)
    best_s = np.argmax(sim, axis=0)
    mutual = best_s[best_r] == np.arange(n_s)
    match[mutual] = best_r[mutual]
    rest_s = np.flatnonzero(~mutual)
    taken = np.zeros(n_r, dtype=bool)
    taken[best_r[mutual]] = True
    rest_r = np.flatnonzero(~taken)
    if len(rest_s) and len(rest_r):
        from scipy.optimize import linear_sum_assignment

        sub = sim[np.ix_(rest_s, rest_r)]
        rows, cols = linear_sum_assignment(sub, maximize=True)
        match[rest_s[rows]] = rest_r[cols]
    return match


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b, dtype=np.float64)


def align_rows(
    e: np.ndarray, r: np.ndarray, *, merge_threshold: float = MERGE_THRESHOLD
) -> tuple[np.ndarray, UnitMap, np.ndarray, np.ndarray]:
    """Align suspect rows ``e`` (``(n_s, d)``) to reference rows ``r`` (``(n_r, d)``).

    Returns the aligned rows ``(n_r, d)``, the unit map, a ``missing`` mask and per-row cosines.
    """
    e, r = _float(e), _float(r)
    n_s, n_r = e.shape[0], r.shape[0]
    if _identity_fits(e, r) or n_s * n_r > MAX_ASSIGN_PAIRS:
        # Rows already correspond, or the table is too large to permute-search (vocabulary
        # embeddings): keep stored order, extra suspect rows unmatched.
        match = np.where(np.arange(n_s) < n_r, np.arange(n_s), -1).astype(np.int64)
    else:
        match = _assign(_similarity(e, r))
    r_sq = _row_dot(r, r)
    r_norm = np.sqrt(r_sq)
    # Left-over suspect units: split copies are merged into their closest reference unit.
    left = np.flatnonzero(match < 0)
    if len(left):
        el = e[left].astype(np.float64)
        el_norm = np.sqrt(_row_dot(el, el))
        sims = np.abs(el @ r.T.astype(np.float64))
        sims /= np.where(el_norm > 0, el_norm, 1.0)[:, None] * np.where(r_norm > 0, r_norm, 1.0)
        best = np.argmax(sims, axis=1)
        ok = sims[np.arange(len(left)), best] >= merge_threshold
        match[left[ok]] = best[ok]
    valid = np.flatnonzero(match >= 0)
    tgt = match[valid]
    e_valid = e[valid] if len(valid) < n_s else e
    er = _row_dot(e_valid, r[tgt])
    scale = np.zeros(n_s)
    scale[valid] = np.where(r_sq[tgt] > 0, er / np.where(r_sq[tgt] > 0, r_sq[tgt], 1.0), 0.0)
    index = match.copy()
    index[valid[scale[valid] == 0]] = -1
    units = UnitMap(index, scale, n_r)
    keep = scale[valid] != 0
    valid, tgt, e_valid = valid[keep], tgt[keep], e_valid[keep] if not keep.all() else e_valid
    den = np.zeros(n_r)
    np.add.at(den, tgt, scale[valid] ** 2)
    uniq, first = np.unique(tgt, return_index=True)
    aligned = np.zeros(r.shape, dtype=e.dtype)
    aligned[tgt[first]] = (
        e_valid[first] * (scale[valid[first]] / den[tgt[first]]).astype(e.dtype)[:, None]
    )
    for i in np.setdiff1d(np.arange(len(tgt)), first):
        aligned[tgt[i]] += e_valid[i] * (scale[valid[i]] / den[tgt[i]])
    missing = den == 0
    a_norm = np.sqrt(_row_dot(aligned, aligned))
    cos = _row_dot(aligned, r) / np.where((a_norm > 0) & (r_norm > 0), a_norm * r_norm, np.inf)
    cos[missing] = 0.0
    return aligned, units, missing, cos


def _as3(w: np.ndarray) -> np.ndarray:
    return w.reshape(w.shape[0], w.shape[1], -1)


def _rescale_inputs(a3: np.ndarray, r3: np.ndarray) -> np.ndarray:
    """Signed least-squares scale per input unit (axis 1) of aligned ``a3`` onto ``r3``."""
    aa = np.einsum("ijk,ijk->j", a3, a3, dtype=np.float64)
    ar = np.einsum("ijk,ijk->j", a3, r3, dtype=np.float64)
    t = np.where(aa > 0, ar / np.where(aa > 0, aa, 1.0), 1.0)
    return a3 * t.astype(a3.dtype)[None, :, None]


def _align_linked(
    s3: np.ndarray, r3: np.ndarray, prev: UnitMap, merge_threshold: float
) -> tuple[np.ndarray, UnitMap, np.ndarray, np.ndarray]:
    """Align a layer whose input axis follows ``prev``.

    The previous layer's unit scales either reached this layer (ReLU rescaling, split units: the
    outgoing weights were divided by them) or did not (a BatchNorm folded into the previous layer
    absorbed them). Both are tried when the first fits poorly, and the better mean cosine wins;
    either way a signed per-input scale is then fitted by least squares.
    """
    variants = [prev]
    scales = prev.scale[prev.index >= 0]
    if not np.allclose(scales, 1.0, atol=1e-3):
        variants.append(UnitMap(prev.index, np.ones_like(prev.scale), prev.n_ref))
    best = None
    for units_in in variants:
        e3 = merge_inputs(s3, units_in)
        aligned, units, missing, cos = align_rows(
            e3.reshape(e3.shape[0], -1),
            r3.reshape(r3.shape[0], -1),
            merge_threshold=merge_threshold,
        )
        a3 = _rescale_inputs(aligned.reshape(r3.shape), r3)
        aligned = a3.reshape(aligned.shape)
        rf = r3.reshape(r3.shape[0], -1)
        num = _row_dot(aligned, rf)
        den = np.sqrt(_row_dot(aligned, aligned) * _row_dot(rf, rf))
        cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        cos[missing] = 0.0
        score = float(np.mean(np.abs(cos)))
        if best is None or score > best[0]:
            best = (score, aligned, units, missing, cos)
        if score >= 0.8:
            break
    assert best is not None
    return best[1], best[2], best[3], best[4]


def links_to(prev_shape: Sequence[int], shape: Sequence[int]) -> bool:
    """Whether a layer of ``prev_shape`` (``(out, ...)``) can feed one of ``shape`` (``(out, in, ...)``)."""
    if len(shape) < 2 or len(prev_shape) < 2:
        return False
    out, inp = prev_shape[0], shape[1]
    if out == inp:
        return True
    return len(prev_shape) >= 3 and len(shape) == 2 and inp % out == 0  # conv -> flatten -> dense


def align_chain(
    suspect: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    links: Sequence[bool] | None = None,
    *,
    merge_threshold: float = MERGE_THRESHOLD,
) -> list[AlignedLayer]:
    """Align a chain of layers, all in ``(out, in, *kernel)`` orientation.

    ``links[k]`` says layer ``k`` feeds layer ``k + 1`` (default: inferred from the reference shapes
    with ``links_to``). The suspect may have more units per hidden layer than the reference (split
    or dummy units) and fewer (removed units: those reference rows come back ``missing``).
    """
    if len(suspect) != len(reference):
        raise ValueError("suspect and reference chains differ in length")
    n = len(reference)
    if links is None:
        links = [links_to(reference[k].shape, reference[k + 1].shape) for k in range(n - 1)]
    out: list[AlignedLayer] = []
    prev: UnitMap | None = None
    for k in range(n):
        s = _float(suspect[k])
        r = _float(reference[k])
        notes: list[str] = []
        linked = k > 0 and links[k - 1] and prev is not None
        s3, r3 = _as3(s), _as3(r)
        if linked and prev is not None and s3.shape[1] != len(prev.index):
            # conv -> dense: axis 1 is channels x positions, channel-major (torch flatten)
            if s3.shape[1] % len(prev.index) == 0 and r3.shape[1] % prev.n_ref == 0:
                s3 = s.reshape(s.shape[0], len(prev.index), -1)
                r3 = r.reshape(r.shape[0], prev.n_ref, -1)
            else:
                linked = False
                notes.append("input axis does not follow the previous layer; not re-mapped")
        if linked and prev is not None:
            aligned, units, missing, cos = _align_linked(s3, r3, prev, merge_threshold)
        else:
            e3 = s3
            if s3.shape[1:] != r3.shape[1:]:
                m = min(s3.shape[1], r3.shape[1])
                e3 = np.zeros((s3.shape[0],) + r3.shape[1:], dtype=s3.dtype)
                e3[:, :m] = s3[:, :m]
                notes.append("input axis differs and is unlinked; compared on the common prefix")
            aligned, units, missing, cos = align_rows(
                e3.reshape(e3.shape[0], -1),
                r3.reshape(r3.shape[0], -1),
                merge_threshold=merge_threshold,
            )
        n_extra = int(np.sum(units.index < 0))
        if n_extra:
            notes.append(f"{n_extra} suspect units matched nothing (dummies)")
        n_split = len(units.index) - n_extra - int(np.sum(~missing))
        if n_split > 0:
            notes.append(f"{n_split} split units merged")
        if missing.any():
            notes.append(f"{int(missing.sum())} reference units absent from the suspect")
        if len(units.index) != units.n_ref or not np.array_equal(
            units.index, np.arange(units.n_ref)
        ):
            notes.append("units re-mapped")
        if np.any(units.scale[units.index >= 0] < 0):
            notes.append("negative unit scales removed")
        out.append(AlignedLayer(aligned.reshape(r.shape), units, missing, cos, notes))
        prev = units
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two equally shaped arrays (flattened); 0 when either is all zeros."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = math.sqrt(float(a @ a)), math.sqrt(float(b @ b))
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0

"""Watermark detection: a hypothesis test with a p-value, never a bare yes/no.

Non-blind (the default when a reference is given): the registry holds the marked reference and its
record, so the original is known exactly (``reference - amplitude * P``). Suspect tensors are paired
with reference tensors by shape and content (``match``), re-aligned to undo permutation, scaling and
unit splitting (``align``), and the residual ``suspect - original`` is tested against the pattern.
Matching and alignment look only at the suspect and the original, never at the key, so they need no
multiple-testing correction: under the null the key's pattern is still a fair coin per element.

Blind (no reference): the suspect's centred, standardised weights are tested against the pattern
of their canonical shape directly; ``z ~ alpha * sqrt(N)``, so it needs large models and does not
survive permutation (use non-blind for that).

Evidence from tensors sharing a pattern is summed before testing, so the statistics in
``assay.watermark.stats`` stay exact. Per element the value tested is the residual clipped at three
robust standard deviations and weighted by ``amplitude / noise power`` (a matched filter that
resists outliers from fine-tuning); both are functions of the suspect and the original alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from assay.watermark import stats
from assay.watermark.match import align_models, orient, weight_tensors
from assay.watermark.scheme import (
    DEFAULT_MIN_SIZE,
    DEFAULT_STRENGTH,
    Canonical,
    TensorMark,
    WatermarkError,
    WatermarkRecord,
    canonical,
    eligible,
    fold,
    pattern_signs,
    to_canonical,
    unmark,
)

THRESHOLD_STRONG = 1e-9  # "this is our model": the registry's default decision threshold
THRESHOLD_WEAK = 1e-3  # worth a look; not evidence on its own
CLIP = 3.0


@dataclass(frozen=True)
class TensorEvidence:
    """One tensor's contribution: its own matched-filter ``z`` and (non-blind) aligned cosine."""

    suspect: str
    reference: str | None
    pattern: str
    transposed: bool
    elements: int
    z: float
    cosine: float | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectionResult:
    """Outcome of one detection. ``p_value`` is raw, ``p_corrected`` accounts for the search."""

    method: str
    z: float
    z_sign: float
    p_value: float
    log10_p: float
    p_corrected: float
    log10_p_corrected: float
    hypotheses: int
    tensors_matched: int
    elements: int
    tensors: tuple[TensorEvidence, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def verdict(self, threshold: float = THRESHOLD_STRONG) -> str:
        """``"detected"`` at ``p_corrected <= threshold``, ``"weak"`` below 1e-3, else ``"none"``."""
        if self.log10_p_corrected <= math.log10(threshold):
            return "detected"
        if self.log10_p_corrected <= math.log10(THRESHOLD_WEAK):
            return "weak"
        return "none"

    @property
    def detected(self) -> bool:
        return self.verdict() == "detected"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tensors"] = [asdict(t) for t in self.tensors]
        d["notes"] = list(self.notes)
        d["verdict"] = self.verdict()
        return d


def _weigh(r: np.ndarray, amp: float) -> np.ndarray:
    """Clip ``r`` at ``CLIP`` robust standard deviations and weight it by ``amp / noise power``.

    Works in place on one float64 copy of ``r`` (models have tensors of 10M+ values).
    """
    r = np.asarray(r, dtype=np.float64)
    nz = r != 0
    n = int(np.count_nonzero(nz))
    if n == 0 or amp <= 0:
        return np.zeros_like(r)
    absr = np.abs(r[nz])
    scale = 1.4826 * float(np.median(absr, overwrite_input=True)) or float(np.mean(absr))
    del absr, nz
    c = np.clip(r, -CLIP * scale, CLIP * scale)
    flat = c.reshape(-1)
    power = float(np.dot(flat, flat)) / n  # clipping keeps zeros at zero
    noise = max(power - amp * amp, (0.25 * amp) ** 2)
    c *= amp / noise
    return c


class _Evidence:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.groups: dict[str, tuple[Canonical, np.ndarray]] = {}
        self.signs: dict[str, np.ndarray] = {}

    def pattern(self, canon: Canonical) -> np.ndarray:
        s = self.signs.get(canon.label)
        if s is None:
            s = self.signs[canon.label] = pattern_signs(self.secret, canon)
        return s

    def add(self, c_canonical: np.ndarray, canon: Canonical) -> float:
        """Add one tensor's weighted values (canonical orientation); return its own ``z``."""
        f = fold(c_canonical, canon)
        z = stats.matched_filter(f, self.pattern(canon)).z
        if canon.label in self.groups:
            self.groups[canon.label][1][:] += f
        else:
            self.groups[canon.label] = (canon, f)
        return z

    def test(self) -> tuple[stats.TestResult, stats.TestResult]:
        """Both tests over every group, summed group by group (no model-sized concatenation)."""
        dot = sq = 0.0
        n_mf = k = n_sign = 0
        for canon, f in self.groups.values():
            s = self.pattern(canon)
            d, q, n = stats.matched_filter_parts(f, s)
            dot, sq, n_mf = dot + d, sq + q, n_mf + n
            a, b = stats.sign_parts(f, s)
            k, n_sign = k + a, n_sign + b
        return stats.matched_filter_from(dot, sq, n_mf), stats.sign_test_from(k, n_sign)


def detection_result(
    method: str,
    ev: Any,
    candidates: int,
    tensors: list[TensorEvidence],
    notes: list[str],
) -> DetectionResult:
    """The result of one test from its evidence (anything whose ``test()`` gives the matched
    filter and the sign test): combined, Sidak-corrected over ``candidates`` hypotheses."""
    mf, sign = ev.test()
    log_p = stats.combine(mf, sign)
    hyp = max(1, int(candidates))
    log_pc = stats.correct(log_p, hyp)
    return DetectionResult(
        method=method,
        z=mf.z,
        z_sign=sign.z,
        p_value=math.exp(log_p),
        log10_p=log_p / stats.LN10,
        p_corrected=math.exp(log_pc),
        log10_p_corrected=log_pc / stats.LN10,
        hypotheses=hyp,
        tensors_matched=len(tensors),
        elements=int(sum(t.elements for t in tensors)),
        tensors=tuple(tensors),
        notes=tuple(notes),
    )


def detect(
    suspect: Mapping[str, np.ndarray],
    secret: bytes,
    *,
    reference: Mapping[str, np.ndarray] | None = None,
    record: WatermarkRecord | None = None,
    candidates: int = 1,
    min_size: int = DEFAULT_MIN_SIZE,
) -> DetectionResult:
    """Test whether ``suspect`` carries the watermark of ``secret``.

    * ``reference`` and ``record``: non-blind; ``reference`` is the *marked* copy the record
      describes (the original is reconstructed; a secret whose fingerprint differs from the record's
      raises ``WatermarkError``).
    * ``reference`` without ``record``: non-blind against an *unmarked original*, assuming tensors
      were selected by ``eligible(..., min_size)`` at the default strength.
    * no ``reference``: blind; with a ``record`` only tensors of its pattern shapes are used.

    ``candidates`` is how many (reference, key) hypotheses the caller searched in all; the result's
    ``p_corrected`` is Sidak-corrected for it.
    """
    if reference is None:
        return _detect_blind(suspect, secret, record, candidates, min_size)
    return _detect_reference(suspect, secret, reference, record, candidates, min_size)


def _detect_blind(
    suspect: Mapping[str, np.ndarray],
    secret: bytes,
    record: WatermarkRecord | None,
    candidates: int,
    min_size: int,
) -> DetectionResult:
    ev = _Evidence(secret)
    strength = record.strength if record is not None else DEFAULT_STRENGTH
    labels = {t.pattern for t in record.tensors} if record is not None else None
    tensors: list[TensorEvidence] = []
    for name, arr in suspect.items():
        a = np.asarray(arr)
        if not eligible(name, a, min_size if labels is None else 1):
            continue
        canon = canonical(tuple(a.shape))
        if labels is not None and canon.label not in labels:
            continue
        w = a.astype(np.float64)
        std = float(np.std(w))
        if std == 0 or not math.isfinite(std):
            continue
        c = _weigh(w - float(np.mean(w)), strength * std)
        z = ev.add(to_canonical(c, canon), canon)
        tensors.append(TensorEvidence(name, None, canon.label, canon.transposed, int(a.size), z))
    notes = [] if tensors else ["no tensor in the suspect can carry the mark"]
    return detection_result("blind", ev, candidates, tensors, notes)


def _detect_reference(
    suspect: Mapping[str, np.ndarray],
    secret: bytes,
    reference: Mapping[str, np.ndarray],
    record: WatermarkRecord | None,
    candidates: int,
    min_size: int,
) -> DetectionResult:
    notes: list[str] = []
    if record is not None:
        original = unmark(reference, secret, record)
        marks = {m.name: m for m in record.tensors}
    else:
        original = {}
        marks = {}
        for name, arr in reference.items():
            a = np.asarray(arr)
            if eligible(name, a, min_size):
                canon = canonical(tuple(a.shape))
                std = float(np.std(a, dtype=np.float64))
                marks[name] = TensorMark(
                    name, tuple(a.shape), str(a.dtype), canon.label, canon.transposed,
                    DEFAULT_STRENGTH * std, std, int(a.size),
                )  # fmt: skip
                original[name] = a.astype(np.float64)
    ref_names = weight_tensors(reference)
    full = {n: original.get(n, np.asarray(reference[n])) for n in ref_names}
    pairs, in_first, align_notes = align_models(suspect, full, ref_names)
    notes.extend(align_notes)
    matched = {p.reference for p in pairs}
    unmatched = [n for n in marks if n not in matched]
    if unmatched:
        notes.append(f"{len(unmatched)} marked tensors have no counterpart in the suspect")
    ev = _Evidence(secret)
    tensors: list[TensorEvidence] = []
    for pair in pairs:
        n, m, layer = pair.reference, pair.match, pair.layer
        mark = marks.get(n)
        if mark is None:
            continue
        resid = layer.weight.astype(np.float64)
        resid -= orient(full[n], in_first)
        resid[layer.missing] = 0.0
        resid = orient(resid, in_first)  # back to the reference's stored orientation
        if record is not None:  # below float rounding of the reconstruction: no evidence
            eps = float(np.finfo(np.dtype(mark.dtype)).eps)
            tol = np.abs(np.asarray(reference[n]), dtype=np.float64)
            tol += mark.amplitude
            tol *= 4.0 * eps
            resid[np.abs(resid) <= tol] = 0.0
            del tol
        canon = canonical(mark.shape)
        c = _weigh(resid, mark.amplitude)
        z = ev.add(to_canonical(c, canon), canon)
        tensors.append(
            TensorEvidence(
                m.suspect,
                n,
                canon.label,
                m.transposed,
                int(mark.marked),
                z,
                layer.mean_cosine,
                tuple(layer.notes),
            )  # fmt: skip
        )
    if not tensors:
        notes.append("no marked tensor could be paired with the suspect")
    return detection_result("non-blind", ev, candidates, tensors, notes)


__all__ = [
    "THRESHOLD_STRONG",
    "THRESHOLD_WEAK",
    "DetectionResult",
    "TensorEvidence",
    "detect",
    "detection_result",
]
_ = WatermarkError  # re-exported for callers catching detection errors

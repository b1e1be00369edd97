"""Watermark tests and embedding that hold one tensor pair at a time (models of any size).

The statistics are those of ``assay.watermark.detect`` (clipped, matched-filter-weighted values;
the matched filter and sign test of ``assay.watermark.stats``; tensors sharing a pattern summed
before the test), computed in float32 with float64 sums. Tensors are visited grouped by pattern
label, so at most one group sum is alive: once a label is done its sum collapses to five scalars.

* :func:`positionwise` is the cheap non-blind test: each marked reference tensor against the suspect
  tensor paired with it, element by element, no re-alignment (a copy, a fine-tuned or noised copy);
* :func:`blind` tests the suspect's own centred weights against the pattern of their shape;
* :func:`embed_source` marks a :class:`~assay.watermark.formats._stream.TensorSource` in place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from assay.watermark import stats
from assay.watermark.detect import CLIP, DetectionResult, TensorEvidence, detection_result
from assay.watermark.scheme import (
    DEFAULT_MIN_SIZE,
    DEFAULT_STRENGTH,
    SCHEME,
    Canonical,
    TensorMark,
    WatermarkError,
    WatermarkRecord,
    canonical,
    check_strength,
    fingerprint,
    mark_tensor,
    pattern_signs,
)


@dataclass(frozen=True)
class Pair:
    """Reference tensor ``reference`` (its record ``mark``) stands for suspect tensor ``suspect``,
    read transposed when ``transposed``."""

    reference: str
    suspect: str
    transposed: bool
    mark: TensorMark


#: elements per step of the float32 kernels (float32 sums over a step, float64 across steps)
STEP = 1 << 18
#: |residual| values (an even stride) whose median sets the clipping scale of a large tensor
SCALE_SAMPLE = 1 << 16


def weigh32(r: np.ndarray, amp: float) -> np.ndarray:
    """``detect._weigh`` in float32, in place on ``r``: clip at ``CLIP`` robust sds, scale.

    The robust sd comes from an even stride of at most ``SCALE_SAMPLE`` values: like the full
    median it is a function of the residual alone, never of the key, so the tests stay exact.
    """
    r = np.asarray(r, dtype=np.float32)
    flat = r.reshape(-1)
    n = int(np.count_nonzero(flat))
    if amp <= 0 or n == 0:
        return np.zeros_like(r)
    sample = np.abs(flat[:: max(1, flat.size // SCALE_SAMPLE)])
    sample = sample[sample != 0]
    if sample.size == 0:
        sample = np.abs(flat[flat != 0])
    scale = 1.4826 * float(np.median(sample)) or float(np.mean(sample, dtype=np.float64))
    del sample
    np.clip(r, -CLIP * scale, CLIP * scale, out=r)
    power = _sumsq(flat) / n  # clipping keeps zeros at zero
    noise = max(power - amp * amp, (0.25 * amp) ** 2)
    r *= np.float32(amp / noise)
    return r


def _sumsq(a: np.ndarray) -> float:
    flat = a.reshape(-1)
    total = 0.0
    for i in range(0, flat.size, STEP):
        piece = flat[i : i + STEP]
        total += float(np.dot(piece, piece))
    return total


def parts32(c: np.ndarray, signs: np.ndarray, *, sign_test: bool = True) -> list[float]:
    """``[sum(c*P), sum(c^2), nonzero c, sign agreements, nonzero c]`` of float32 ``c`` and
    int8 ``signs`` (the parts of ``stats.matched_filter_parts`` and ``stats.sign_parts``)."""
    c, signs = c.reshape(-1), signs.reshape(-1)
    dot = sq = 0.0
    n = k = 0
    for i in range(0, c.size, STEP):
        ci = c[i : i + STEP]
        si = signs[i : i + STEP].astype(np.float32)
        dot += float(np.dot(ci, si))
        sq += float(np.dot(ci, ci))
        if sign_test:
            n += int(np.count_nonzero(ci))
            si *= ci
            k += int(np.count_nonzero(si > 0))  # c != 0 and sign(c) == P
    return [dot, sq, n, k, n]


_TRIU: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def fold32(c: np.ndarray, canon: Canonical) -> np.ndarray:
    """``scheme.fold`` of a square symmetric-pattern tensor in float32 (upper triangle)."""
    n = canon.shape[0]
    iu = _TRIU.get(n)
    if iu is None:
        iu = _TRIU[n] = np.triu_indices(n)
    out = c[iu] + c.T[iu]
    out[iu[0] == iu[1]] *= np.float32(0.5)
    return out


class GroupedEvidence:
    """Evidence summed by pattern label; a closed label keeps only its five sums.

    Tensors arrive in their stored orientation with ``transposed`` saying how they map onto the
    canonical pattern; the sum is kept in the first one's orientation and the signs are laid out
    to match (an int8 copy), so no float tensor is ever transposed into a copy.
    """

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.label: str | None = None
        self.canon: Canonical | None = None
        self._signs: dict[object, np.ndarray] = {}
        self.acc: np.ndarray | None = None
        self.acc_transposed = False
        self.parts = [0.0, 0.0, 0, 0, 0]  # dot, sq, n (matched filter); k, n (sign test)

    def signs(self, transposed: bool) -> np.ndarray:
        if transposed not in self._signs:
            base = self._signs[False]
            self._signs[True] = np.ascontiguousarray(base.reshape(self.canon.shape).T).reshape(-1)
        return self._signs[transposed]

    def start(self, canon: Canonical) -> None:
        """Make ``canon``'s pattern the current one (closing the previous label's sum)."""
        if canon.label != self.label:
            self.close()
            self.label, self.canon = canon.label, canon
            self._signs = {False: pattern_signs(self.secret, canon)}

    def stored_pattern(self, transposed: bool) -> np.ndarray:
        """The current full +-1 pattern, flat, in a tensor's stored orientation (int8)."""
        if not self.canon.symmetric:
            return self.signs(transposed)
        if "full" not in self._signs:
            n = self.canon.shape[0]
            full = np.empty((n, n), dtype=np.int8)
            iu = np.triu_indices(n)
            full[iu] = self._signs[False]
            full[iu[1], iu[0]] = self._signs[False]
            self._signs["full"] = full.reshape(-1)
        return self._signs["full"]

    def add(self, c_stored: np.ndarray, canon: Canonical, transposed: bool) -> float:
        """Add one tensor's weighted values (stored orientation, float32, the caller's own array
        from now on); return its own ``z``."""
        self.start(canon)
        if canon.symmetric:
            f, transposed = fold32(c_stored, canon), False
        else:
            f = np.ascontiguousarray(c_stored).reshape(-1)
        d, q, *_ = parts32(f, self.signs(transposed), sign_test=False)
        z = stats.matched_filter_from(d, q, 1).z
        if self.acc is None:
            self.acc, self.acc_transposed = f, transposed
        elif transposed == self.acc_transposed or canon.symmetric:
            self.acc += f
        else:
            shape = canon.shape[::-1] if self.acc_transposed else canon.shape
            self.acc.reshape(shape)[...] += f.reshape(shape[::-1]).T
        return z

    def close(self) -> None:
        if self.acc is not None:
            for i, v in enumerate(parts32(self.acc, self.signs(self.acc_transposed))):
                self.parts[i] += v
        self.acc = None
        self._signs = {}
        self.label = None

    def test(self) -> tuple[stats.TestResult, stats.TestResult]:
        self.close()
        d, q, n, k, m = self.parts
        return stats.matched_filter_from(d, q, int(n)), stats.sign_test_from(int(k), int(m))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    fa, fb = a.reshape(-1), b.reshape(-1)
    dot = na = nb = 0.0
    for i in range(0, fa.size, stats.CHUNK):
        x = fa[i : i + stats.CHUNK].astype(np.float64)
        y = fb[i : i + stats.CHUNK].astype(np.float64)
        dot += float(x @ y)
        na += float(x @ x)
        nb += float(y @ y)
    return dot / math.sqrt(na * nb) if na > 0 and nb > 0 else 0.0


def _shape_of(source: Mapping[str, np.ndarray], name: str) -> tuple[int, ...]:
    shapes = getattr(source, "shapes", None)
    return tuple(shapes[name]) if shapes is not None else tuple(np.shape(source[name]))


def _ref_blocks(source: Mapping[str, np.ndarray], name: str) -> Iterable[np.ndarray]:
    """Reference tensor ``name`` flat in blocks of ``STEP`` (read block by block when the source
    can: a ``TensorSource``)."""
    if hasattr(source, "blocks"):
        return source.blocks(name, STEP)
    flat = np.asarray(source[name], dtype=np.float32).reshape(-1)
    return (flat[i : i + STEP] for i in range(0, flat.size, STEP))


def positionwise(
    suspect: Mapping[str, np.ndarray],
    secret: bytes,
    references: Iterable[tuple[Mapping[str, np.ndarray], Pair]],
    record: WatermarkRecord,
    *,
    hypotheses: int = 1,
) -> DetectionResult:
    """Non-blind test of ``suspect`` against marked references, pair by pair, without alignment.

    ``references`` yields ``(reference source, pair)``, best grouped by ``pair.mark.pattern``.
    Per pair the residual ``suspect - (reference - amplitude * P)`` is tested exactly as
    ``detect`` tests an aligned one (values below the float rounding of the reconstruction carry
    no evidence). Memory: the suspect tensor (float32, it becomes the residual), one block of the
    reference (a bf16/fp16 reference is converted a block at a time) and one pattern.
    """
    if fingerprint(secret) != record.secret_fingerprint:
        raise WatermarkError("secret does not match the watermark record's fingerprint")
    ev = GroupedEvidence(secret)
    tensors: list[TensorEvidence] = []
    nonfinite = 0
    for ref_source, pair in references:
        mark = pair.mark
        canon = mark.canonical()
        ref_shape = _shape_of(ref_source, pair.reference)
        want = _shape_of(suspect, pair.suspect)
        if tuple(want[::-1] if pair.transposed else want) != ref_shape:
            continue
        ev.start(canon)  # grouped input: one pattern alive at a time (the last sum closed first)
        s = np.asarray(suspect[pair.suspect], dtype=np.float32)
        s = s.T if pair.transposed else s
        p = ev.stored_pattern(canon.transposed)
        amp = np.float32(mark.amplitude)
        eps4 = np.float32(4.0 * np.finfo(np.dtype(mark.dtype)).eps)
        fresh = getattr(suspect, "fresh", False) and not pair.transposed
        resid = s if fresh and s.flags.c_contiguous else np.array(s, order="C")
        del s
        fs = resid.reshape(-1)
        dot = na = nb = 0.0
        # the reference a block of STEP at a time (float32 per block: never a whole float32 copy)
        for i, y in zip(range(0, fs.size, STEP), _ref_blocks(ref_source, pair.reference),
                        strict=True):  # fmt: skip
            x = fs[i : i + STEP]
            y = np.asarray(y, dtype=np.float32)
            bad = ~np.isfinite(x)  # a NaN or inf in the suspect is no evidence either way
            if bad.any():
                x[bad] = 0.0
                nonfinite += int(bad.sum())
            else:
                bad = None
            dot, na, nb = dot + float(x @ y), na + float(x @ x), nb + float(y @ y)
            # suspect - original == suspect - reference + amp * P, in place over the suspect
            x -= y
            x += amp * p[i : i + STEP]
            tol = np.abs(y)
            tol += amp
            tol *= eps4  # below the float rounding of the reconstruction: no evidence
            x[np.abs(x) <= tol] = 0.0
            if bad is not None:
                x[bad] = 0.0
        cosine = dot / math.sqrt(na * nb) if na > 0 and nb > 0 else 0.0
        del fs
        c = weigh32(resid, float(mark.amplitude))
        z = ev.add(c, canon, canon.transposed)
        del c, resid
        tensors.append(
            TensorEvidence(
                pair.suspect,
                pair.reference,
                canon.label,
                pair.transposed,
                int(mark.marked),
                z,
                cosine,
            )  # fmt: skip
        )
    notes = [] if tensors else ["no marked tensor could be paired with the suspect"]
    if nonfinite:
        notes.append(f"{nonfinite} non-finite suspect value(s) tested as no evidence")
    return detection_result("position-wise", ev, hypotheses, tensors, notes)


def blind(
    suspect: Mapping[str, np.ndarray],
    secret: bytes,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    strength: float = DEFAULT_STRENGTH,
    min_size: int = DEFAULT_MIN_SIZE,
    hypotheses: int = 1,
) -> DetectionResult:
    """``detect``'s blind test, streamed: one suspect tensor at a time, grouped by pattern."""
    shapes = shapes if shapes is not None else {n: tuple(np.shape(a)) for n, a in suspect.items()}
    names = markable(shapes, min_size)
    names.sort(key=lambda n: canonical(shapes[n]).label)
    ev = GroupedEvidence(secret)
    tensors: list[TensorEvidence] = []
    for name in names:
        w = np.asarray(suspect[name], dtype=np.float32)
        if not getattr(suspect, "fresh", False) or not w.flags.writeable:
            w = w.copy()
        canon = canonical(tuple(w.shape))
        bad = ~np.isfinite(w)
        if bad.all():
            continue
        if bad.any():  # a NaN or inf is no evidence: set to the mean, so it centres to 0
            mean = float(np.mean(w[~bad], dtype=np.float64))
            w[bad] = np.float32(mean)
        else:
            mean = float(np.mean(w, dtype=np.float64))
        del bad
        w -= np.float32(mean)
        std = math.sqrt(_sumsq(w) / w.size)
        if std == 0 or not math.isfinite(std):
            continue
        c = weigh32(w, strength * std)
        z = ev.add(c, canon, canon.transposed)
        del c, w
        tensors.append(TensorEvidence(name, None, canon.label, canon.transposed,
                                      math.prod(shapes[name]), z))  # fmt: skip
    notes = [] if tensors else ["no tensor in the suspect can carry the mark"]
    return detection_result("blind", ev, hypotheses, tensors, notes)


def markable(shapes: Mapping[str, tuple[int, ...]], min_size: int = DEFAULT_MIN_SIZE) -> list[str]:
    """The tensors (by name) that can carry the mark: >= 2-D and at least ``min_size`` values."""
    return [n for n, s in shapes.items() if len(s) >= 2 and math.prod(s) >= min_size]


def embed_source(
    source,
    secret: bytes,
    *,
    strength: float = DEFAULT_STRENGTH,
    min_size: int = DEFAULT_MIN_SIZE,
    sketch=None,
) -> tuple[WatermarkRecord, dict]:
    """Mark every eligible tensor of an ``in_place`` ``TensorSource`` (opened writable on a
    private copy), one tensor at a time, then ``source.finish()`` (a torch archive's CRCs, an ONNX
    model's inline tensors).

    Returns the record (as ``scheme.embed`` makes it) and, when ``sketch(name, marked)`` is given,
    its per-tensor results (registration keeps a few marked values per tensor).
    """
    check_strength(strength)
    fingerprint(secret)  # checks the secret
    names = markable(source.shapes, min_size)
    if not names:
        raise WatermarkError("no tensor can carry a watermark (need float tensors >= 2-D)")
    names_by_label = sorted(names, key=lambda n: canonical(source.shapes[n]).label)
    cache: dict[str, np.ndarray] = {}
    marks: dict[str, TensorMark] = {}
    sketches: dict = {}
    for name in names_by_label:
        label = canonical(source.shapes[name]).label
        if label not in cache:
            cache.clear()
        marked, mark = mark_tensor(name, source[name], secret, strength, cache)
        source.write(name, marked)
        marks[name] = mark
        if sketch is not None:
            sketches[name] = sketch(name, marked)
        del marked
    source.finish()
    record = WatermarkRecord(
        SCHEME, float(strength), fingerprint(secret), tuple(marks[n] for n in names)
    )
    return record, {n: sketches[n] for n in names if n in sketches}

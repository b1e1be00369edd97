"""The keyed weight watermark: patterns, embedding and the record kept in the registry.

For every selected weight tensor ``W`` (at least 2-D and ``min_size`` elements) embedding adds
``alpha * std(W) * P`` where ``P`` is a +-1 pattern drawn from PCG64 seeded with
``HMAC-SHA256(secret, pattern label)``.

Pattern identity. Blind detection has nothing but the suspect's tensors, whose names change on
export (``onnx::MatMul_28``) and whose 2-D weights may be transposed (torch ``Linear`` keeps
``(out, in)``, an ONNX ``MatMul`` ``(in, out)``). So the label is derived from the *canonical shape*
only, never from the name:

* 2-D ``(a, b)``: the pattern is generated in the orientation ``(min, max)``; a tensor stored the
  other way round gets the transpose. Square matrices get a *symmetric* pattern, so either
  orientation carries the same mark and no orientation has to be guessed (detection folds
  ``c + c.T`` onto the upper triangle, whose signs are the independent ones).
* 3-D and more (conv kernels ``(out, in, kh, kw)``, which ONNX keeps as they are): the shape as is.

Tensors that share a canonical shape share a pattern. Detection accounts for that exactly: it sums
the evidence of all tensors with one pattern *before* the test, so the null distribution stays a sum
of independent fair signs (see ``assay.watermark.stats``). The cost is that an attacker holding many
same-shape tensors could average them to estimate the pattern; with ``k`` such tensors the
per-element signal-to-noise of that estimate is ``alpha * sqrt(k)`` (0.035 for twelve layers at
1 %), far too low to recover signs.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from assay.core.errors import AssayError, FormatError

SCHEME = "assay-wm/1"
DEFAULT_STRENGTH = 0.01
DEFAULT_MIN_SIZE = 1024
MAX_STRENGTH = 0.5
_FINGERPRINT_INFO = b"assay-watermark-fingerprint"
_PATTERN_INFO = b"assay-watermark/1/pattern|"


class WatermarkError(AssayError):
    """A watermark operation was given unusable input (bad secret, strength, or mismatched key)."""


Selector = Callable[[str, np.ndarray], bool] | Iterable[str] | None


@dataclass(frozen=True)
class Canonical:
    """How a tensor maps onto its pattern: canonical shape, whether it is stored transposed."""

    shape: tuple[int, ...]
    transposed: bool

    @property
    def label(self) -> str:
        kind = f"{len(self.shape)}d"
        sym = "sym-" if self.symmetric else ""
        return f"{kind}:{sym}{'x'.join(str(d) for d in self.shape)}"

    @property
    def symmetric(self) -> bool:
        return len(self.shape) == 2 and self.shape[0] == self.shape[1]

    @property
    def dof(self) -> int:
        """Number of independent signs in the pattern."""
        if self.symmetric:
            n = self.shape[0]
            return n * (n + 1) // 2
        return math.prod(self.shape)


def canonical(shape: tuple[int, ...]) -> Canonical:
    """Canonical pattern shape of a tensor shape (see the module docstring)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 2 and shape[0] > shape[1]:
        return Canonical((shape[1], shape[0]), True)
    return Canonical(shape, False)


def fingerprint(secret: bytes) -> str:
    """Public commitment to a secret: ``sha256(HMAC(secret, "assay-watermark-fingerprint"))``."""
    _check_secret(secret)
    mac = hmac.new(secret, _FINGERPRINT_INFO, hashlib.sha256).digest()
    return hashlib.sha256(mac).hexdigest()


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
        raise WatermarkError("watermark secret must be at least 16 bytes")


def pattern_signs(secret: bytes, canon: Canonical) -> np.ndarray:
    """The pattern's independent signs as a flat ``int8`` array of +-1 (length ``canon.dof``)."""
    _check_secret(secret)
    digest = hmac.new(bytes(secret), _PATTERN_INFO + canon.label.encode(), hashlib.sha256).digest()
    seed = np.random.SeedSequence(
        [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 32, 4)]
    )
    rng = np.random.Generator(np.random.PCG64(seed))
    n = canon.dof
    bits = np.unpackbits(np.frombuffer(rng.bytes((n + 7) // 8), dtype=np.uint8), count=n)
    signs = bits.view(np.int8)
    signs *= -2
    signs += 1
    return signs


def pattern(secret: bytes, canon: Canonical) -> np.ndarray:
    """The full +-1 pattern (``int8``) in canonical orientation."""
    signs = pattern_signs(secret, canon)
    if not canon.symmetric:
        return signs.reshape(canon.shape)
    n = canon.shape[0]
    full = np.empty((n, n), dtype=np.int8)
    iu = np.triu_indices(n)
    full[iu] = signs
    full[iu[1], iu[0]] = signs
    return full


def to_canonical(array: np.ndarray, canon: Canonical) -> np.ndarray:
    """View ``array`` (stored shape) in canonical orientation."""
    return array.T if canon.transposed else array


def fold(c: np.ndarray, canon: Canonical) -> np.ndarray:
    """Map values in canonical orientation onto the pattern's independent coordinates (float64).

    For a symmetric pattern ``sum(c * P) == sum(fold(c) * signs)`` with ``fold`` adding ``c[i, j]``
    and ``c[j, i]``; otherwise it is a plain ravel.
    """
    c = np.asarray(c, dtype=np.float64)
    if not canon.symmetric:
        return c.ravel()
    iu = np.triu_indices(canon.shape[0])
    out = c[iu] + c.T[iu]
    out[iu[0] == iu[1]] *= 0.5
    return out


@dataclass(frozen=True)
class TensorMark:
    """What was done to one tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    pattern: str
    transposed: bool
    amplitude: float
    std: float
    marked: int

    def canonical(self) -> Canonical:
        return canonical(self.shape)


@dataclass(frozen=True)
class WatermarkRecord:
    """The registry's record of one embedding. Holds a fingerprint of the secret, never the secret."""

    scheme: str
    strength: float
    secret_fingerprint: str
    tensors: tuple[TensorMark, ...] = field(default_factory=tuple)

    @property
    def marked(self) -> int:
        return sum(t.marked for t in self.tensors)

    def by_name(self) -> dict[str, TensorMark]:
        return {t.name: t for t in self.tensors}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tensors"] = [dict(asdict(t), shape=list(t.shape)) for t in self.tensors]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WatermarkRecord:
        try:
            if data["scheme"] != SCHEME:
                raise FormatError(f"unknown watermark scheme {data['scheme']!r}")
            tensors = tuple(
                TensorMark(
                    name=str(t["name"]),
                    shape=tuple(int(d) for d in t["shape"]),
                    dtype=str(t["dtype"]),
                    pattern=str(t["pattern"]),
                    transposed=bool(t["transposed"]),
                    amplitude=float(t["amplitude"]),
                    std=float(t["std"]),
                    marked=int(t["marked"]),
                )
                for t in data["tensors"]
            )
            return cls(
                scheme=str(data["scheme"]),
                strength=float(data["strength"]),
                secret_fingerprint=str(data["secret_fingerprint"]),
                tensors=tensors,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed watermark record: {exc}") from exc


@dataclass(frozen=True)
class EmbedResult:
    """Marked copies of the changed tensors (same dtype and shape) and the record to keep."""

    tensors: dict[str, np.ndarray]
    record: WatermarkRecord


def eligible(name: str, array: np.ndarray, min_size: int = DEFAULT_MIN_SIZE) -> bool:
    """Whether a tensor can carry the mark: floating point, at least 2-D, ``min_size`` elements.

    1-D tensors (biases, norm scales) are skipped: few elements, and norms are fragile. Embedding
    matrices are kept: they are large and a 1 % perturbation per element is harmless there.
    """
    a = np.asarray(array)
    return a.ndim >= 2 and a.size >= min_size and np.issubdtype(a.dtype, np.floating)


def _selected(tensors: Mapping[str, np.ndarray], select: Selector, min_size: int) -> list[str]:
    if select is None:
        return [n for n, a in tensors.items() if eligible(n, a, min_size)]
    if callable(select):
        return [n for n, a in tensors.items() if eligible(n, a, 1) and select(n, a)]
    names = list(select)
    missing = [n for n in names if n not in tensors]
    if missing:
        raise WatermarkError(f"selected tensors not found: {', '.join(missing[:5])}")
    bad = [n for n in names if not eligible(n, tensors[n], 1)]
    if bad:
        raise WatermarkError(
            f"tensors cannot carry a mark (need float, >= 2-D): {', '.join(bad[:5])}"
        )
    return names


def mark_tensor(
    name: str,
    array: np.ndarray,
    secret: bytes,
    strength: float,
    cache: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, TensorMark]:
    """Mark one tensor: its marked copy (same dtype) and what was done (``embed`` per tensor).

    ``cache`` keeps patterns by label between calls (tensors sharing a canonical shape).
    """
    w = np.asarray(array)
    canon = canonical(w.shape)
    std = float(np.std(w, dtype=np.float64))
    if not math.isfinite(std):
        raise WatermarkError(f"tensor {name} has non-finite values")
    work = np.float32 if w.dtype.itemsize <= 4 else np.float64
    amp = float(work(strength * std))  # the amplitude exactly as applied
    cache = {} if cache is None else cache
    p = cache.get(canon.label)
    if p is None:
        p = cache[canon.label] = pattern(secret, canon)
    delta = to_canonical(p, canon).astype(work)
    delta *= work(amp)
    delta += w
    marked = delta.astype(w.dtype, copy=False)
    mark = TensorMark(
        name=name,
        shape=tuple(w.shape),
        dtype=str(w.dtype),
        pattern=canon.label,
        transposed=canon.transposed,
        amplitude=amp,
        std=std,
        marked=int(w.size) if amp > 0 else 0,
    )
    return marked, mark


def check_strength(strength: float) -> None:
    if not (0.0 < strength <= MAX_STRENGTH) or not math.isfinite(strength):
        raise WatermarkError(f"watermark strength must be in (0, {MAX_STRENGTH}], got {strength}")


def embed(
    tensors: Mapping[str, np.ndarray],
    secret: bytes,
    *,
    strength: float = DEFAULT_STRENGTH,
    min_size: int = DEFAULT_MIN_SIZE,
    select: Selector = None,
) -> EmbedResult:
    """Mark the selected tensors; return only the changed ones and the record.

    ``select`` is ``None`` (every eligible tensor), a list of names, or ``f(name, array) -> bool``.
    """
    _check_secret(secret)
    check_strength(strength)
    names = _selected(tensors, select, min_size)
    if not names:
        raise WatermarkError("no tensor can carry a watermark (need float tensors >= 2-D)")
    out: dict[str, np.ndarray] = {}
    marks: list[TensorMark] = []
    cache: dict[str, np.ndarray] = {}
    for name in names:
        out[name], mark = mark_tensor(name, tensors[name], secret, strength, cache)
        marks.append(mark)
    record = WatermarkRecord(SCHEME, float(strength), fingerprint(secret), tuple(marks))
    return EmbedResult(out, record)


def unmark(
    tensors: Mapping[str, np.ndarray], secret: bytes, record: WatermarkRecord
) -> dict[str, np.ndarray]:
    """Reconstruct the original (float64) of every marked tensor from a marked copy and its record.

    Raises ``WatermarkError`` when the secret is not the one the record was made with: with a
    wrong secret the "original" would be wrong in exactly the way that fakes a detection.
    """
    if fingerprint(secret) != record.secret_fingerprint:
        raise WatermarkError("secret does not match the watermark record's fingerprint")
    out: dict[str, np.ndarray] = {}
    cache: dict[str, np.ndarray] = {}
    for mark in record.tensors:
        if mark.name not in tensors:
            raise WatermarkError(f"reference lacks marked tensor {mark.name}")
        w = np.asarray(tensors[mark.name])
        if tuple(w.shape) != mark.shape:
            raise WatermarkError(
                f"reference tensor {mark.name} has shape {w.shape}, not {mark.shape}"
            )
        canon = mark.canonical()
        p = cache.get(canon.label)
        if p is None:
            p = cache[canon.label] = pattern(secret, canon)
        out[mark.name] = w.astype(np.float64) - mark.amplitude * to_canonical(p, canon)
    return out

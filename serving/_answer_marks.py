"""DAWN-style answer watermarks (Szyller et al., ACM MM 2021).

For a keyed fraction of inputs (the policy's ``answer_marks``, default 0.5 %), chosen by
``HMAC(key, model name || row key)`` so a repeated input gets the same answer (the row key is
:func:`assay.serving._features.row_key`: the row quantised, so near-duplicates such as ``0.0`` and
``-0.0`` get the same decision; a row that is not numeric is keyed by its canonical form), the server
returns a keyed alternative answer and records (input, marked answer, own answer) in
``serve_marks``:

* **classification** (1-D label answers, the label set known from ``classes_`` of the raw model
  or at least two labels answered): another of the model's labels, chosen by the HMAC;
* **regression / embeddings** (float answers, 1-D or one row per input, no known label set):
  ``y + d`` with ``d = bound * |y| / sqrt(n) * s``, ``s`` a keyed +-1 pattern over the ``n``
  output values (SHAKE-256 of a second HMAC), so ``|d| = bound * |y|`` exactly (L2, relative to
  the answer's own scale; the policy's ``answer_mark_bound``, default 0.05); an all-zero answer
  is not marked.

A surrogate trained on the answers learns the marks; an independent model agrees with them only
by chance (:mod:`assay.serving._mark_stats`). The key is derived from the installation's
watermark secret (``registry/watermark_secrets.py``); it never leaves the keyring folder. Models
the policy lists under ``exact_models`` are never marked; float answers of a model with a known
label set (float class labels) are not perturbed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import threading
from typing import TYPE_CHECKING, Any

from assay.serving._features import canonical, row_key

if TYPE_CHECKING:
    from assay.registry.facade import Registry
    from assay.serving._loaded import LoadedModel

__all__ = ["AnswerMarker", "derive_key", "row_digest"]

CONTEXT = b"assay-answer-marks-v1"
MAX_OUTPUT_VALUES = 65_536  # output values per answer that may be perturbed


def derive_key(secret: bytes) -> bytes:
    return hmac.new(secret, CONTEXT, hashlib.sha256).digest()


def _numeric(row: Any) -> bool:
    import numpy as np

    return isinstance(row, np.ndarray) and row.dtype.kind in "fiub"


def row_bytes(row: Any) -> bytes:
    import numpy as np

    return np.ascontiguousarray(np.asarray(row, dtype=np.float64)).tobytes()


def row_digest(row: Any) -> str:
    """SHA-256 of a numeric row's exact float64 bytes, or of a non-numeric row's canonical key."""
    return hashlib.sha256(row_bytes(row) if _numeric(row) else row_key(row)).hexdigest()


def _record_input(row: Any) -> str:
    """The JSON of a marked input (numbers for a numeric row, canonical cells otherwise)."""
    if _numeric(row):
        return json.dumps([float(v) for v in row.reshape(-1)])
    return json.dumps(canonical(row))


def _label(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class AnswerMarker:
    def __init__(self, key: bytes) -> None:
        self.key = key
        self.seen: dict[str, set] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_registry(cls, registry: Registry) -> AnswerMarker | None:
        from assay.core.errors import AssayError
        from assay.registry.watermark_secrets import active_secret

        try:
            return cls(derive_key(active_secret(registry)))
        except (AssayError, OSError):
            return None

    def _mac(self, model: str, row: Any) -> bytes:
        return hmac.new(self.key, model.encode() + b"\0" + row_key(row), hashlib.sha256).digest()

    @staticmethod
    def _selected(mac: bytes, fraction: float) -> bool:
        return int.from_bytes(mac[:8], "big") / 2**64 < fraction

    def signs(self, model: str, row: Any, n: int) -> Any:
        """The keyed +-1 pattern (float64) of ``n`` values for ``row``'s perturbation."""
        import numpy as np

        seed = hmac.new(self.key, b"direction\0" + self._mac(model, row), hashlib.sha256).digest()
        bits = np.unpackbits(np.frombuffer(hashlib.shake_256(seed).digest((n + 7) // 8), np.uint8))
        return bits[:n].astype(np.float64) * 2.0 - 1.0

    def choose(self, model: str, row: Any, fraction: float, labels: list[Any], own: Any) -> Any:
        """The marked label for ``row``, or None when the row is not marked."""
        mac = self._mac(model, row)
        if not self._selected(mac, fraction):
            return None
        others = [v for v in labels if v != own]
        if not others:
            return None
        return others[int.from_bytes(mac[8:16], "big") % len(others)]

    def perturb(
        self, name: str, rows: Any, array: Any, fraction: float, bound: float
    ) -> tuple[Any, list[dict[str, Any]]]:
        """Perturbation marks of float answers ``array`` (1-D, or a row per input)."""
        import numpy as np

        if bound <= 0 or array.ndim not in (1, 2) or array[:1].size > MAX_OUTPUT_VALUES:
            return array, []
        out, marks = array.copy(), []
        for i, row in enumerate(rows):
            if not self._selected(self._mac(name, row), fraction):
                continue
            own = np.asarray(array[i], dtype=np.float64).reshape(-1)
            scale = float(np.linalg.norm(own))
            if not math.isfinite(scale) or scale == 0.0:
                continue
            delta = bound * scale / math.sqrt(own.size) * self.signs(name, row, own.size)
            out[i] = (own + delta).reshape(np.shape(array[i]))
            marked = np.asarray(out[i], dtype=np.float64)
            marks.append(
                {
                    "input_digest": row_digest(row),
                    "input": _record_input(row),
                    "answer": json.dumps(marked.tolist()),
                    "original": json.dumps(own.reshape(np.shape(array[i])).tolist()),
                }
            )
        return (out if marks else array), marks

    def apply(
        self,
        loaded: LoadedModel,
        client: str,
        rows: Any,
        predictions: Any,
        fraction: float,
        bound: float = 0.0,
    ) -> tuple[Any, list[dict[str, Any]]]:
        """(predictions with marked answers, mark records); untouched when not applicable.
        ``bound``: the relative size of perturbation marks of float answers (0: none)."""
        import numpy as np

        if fraction <= 0 or rows is None:
            return predictions, []
        array = np.asarray(predictions) if not hasattr(predictions, "to_numpy") else None
        if array is None or len(array) != len(rows):
            return predictions, []
        if array.dtype.kind == "f":
            if loaded.labels:  # float class labels: never perturbed
                return predictions, []
            marked, marks = self.perturb(loaded.name, rows, array, fraction, bound)
            return (marked if marks else predictions), marks
        if array.ndim != 1:
            return predictions, []
        labels = [_label(v) for v in loaded.labels]
        if not labels:
            with self._lock:
                seen = self.seen.setdefault(loaded.name, set())
                seen.update(_label(v) for v in array.tolist()[:1000])
                labels = sorted(seen, key=repr)
        if len(labels) < 2:
            return predictions, []
        out, marks = array.copy(), []
        for i, row in enumerate(rows):
            own = _label(array[i])
            alt = self.choose(loaded.name, row, fraction, labels, own)
            if alt is None:
                continue
            out[i] = alt
            marks.append(
                {
                    "input_digest": row_digest(row),
                    "input": _record_input(row),
                    "answer": json.dumps(alt),
                    "original": json.dumps(own),
                }
            )
        return (out if marks else predictions), marks


def mark_job(name: str, version: str, client: str, marks: list[dict[str, Any]]):
    """A writer job recording ``marks``."""
    from assay.store.models import ServeMark

    def job(session: Any) -> None:
        for m in marks:
            session.add(ServeMark(model_name=name, version=version, client=client, **m))

    return job

"""DAWN-style answer watermarks (Szyller et al., ACM MM 2021) for classifiers.

For a keyed fraction of inputs (the policy's ``answer_marks``, default 0.5 %), chosen by
``HMAC(key, model name || row bytes)`` so a repeated input gets the same answer, the server
returns a keyed alternative label (one of the model's other labels, also chosen by the HMAC)
and records (input, marked answer, own answer) in ``serve_marks``. A surrogate trained on the
answers learns the marked labels; an independent model agrees with them only by chance
(see :mod:`assay.serving.behaviour`). The key is derived from the installation's watermark
secret (``registry/watermark_secrets.py``); it never leaves the keyring folder.

Only 1-D label answers are marked, and only when the label set is known (``classes_`` of the
raw model) or at least two labels have been answered; models the policy lists under
``exact_models`` are never marked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assay.registry.facade import Registry
    from assay.serving.loaded import LoadedModel

__all__ = ["AnswerMarker", "derive_key", "row_digest"]

CONTEXT = b"assay-answer-marks-v1"


def derive_key(secret: bytes) -> bytes:
    return hmac.new(secret, CONTEXT, hashlib.sha256).digest()


def row_bytes(row: Any) -> bytes:
    import numpy as np

    return np.ascontiguousarray(np.asarray(row, dtype=np.float64)).tobytes()


def row_digest(row: Any) -> str:
    return hashlib.sha256(row_bytes(row)).hexdigest()


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

    def choose(self, model: str, row: Any, fraction: float, labels: list[Any], own: Any) -> Any:
        """The marked label for ``row``, or None when the row is not marked."""
        mac = hmac.new(self.key, model.encode() + b"\0" + row_bytes(row), hashlib.sha256).digest()
        if int.from_bytes(mac[:8], "big") / 2**64 >= fraction:
            return None
        others = [v for v in labels if v != own]
        if not others:
            return None
        return others[int.from_bytes(mac[8:16], "big") % len(others)]

    def apply(
        self, loaded: LoadedModel, client: str, rows: Any, predictions: Any, fraction: float
    ) -> tuple[Any, list[dict[str, Any]]]:
        """(predictions with marked answers, mark records); untouched when not applicable."""
        import numpy as np

        if fraction <= 0 or rows is None:
            return predictions, []
        array = np.asarray(predictions) if not hasattr(predictions, "to_numpy") else None
        if array is None or array.ndim != 1 or len(array) != len(rows) or array.dtype.kind == "f":
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
                    "input": json.dumps([float(v) for v in row]),
                    "answer": json.dumps(alt),
                    "original": json.dumps(own),
                }
            )
        return (out if marks else predictions), marks


def mark_job(name: str, version: str, client: str, marks: list[dict[str, Any]]):
    """A writer job recording ``marks``."""
    from assay.registry.models import ServeMark

    def job(session: Any) -> None:
        for m in marks:
            session.add(ServeMark(model_name=name, version=version, client=client, **m))

    return job

"""Ownership watermarks: keyed, post-hoc spread-spectrum marks in model weights, and their tests.

Pure functions over named numpy tensors (``Mapping[str, np.ndarray]``); ``assay.watermark.formats``
reads and writes them safely for safetensors, torch, TorchScript and ONNX files. This package knows
nothing of MLflow or the store. Names are imported lazily so ``import assay.watermark`` is cheap.
"""

from __future__ import annotations

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "embed": "assay.watermark.scheme",
    "unmark": "assay.watermark.scheme",
    "fingerprint": "assay.watermark.scheme",
    "EmbedResult": "assay.watermark.scheme",
    "WatermarkRecord": "assay.watermark.scheme",
    "TensorMark": "assay.watermark.scheme",
    "WatermarkError": "assay.watermark.scheme",
    "DEFAULT_STRENGTH": "assay.watermark.scheme",
    "SCHEME": "assay.watermark.scheme",
    "detect": "assay.watermark.detect",
    "DetectionResult": "assay.watermark.detect",
    "TensorEvidence": "assay.watermark.detect",
    "THRESHOLD_STRONG": "assay.watermark.detect",
    "THRESHOLD_WEAK": "assay.watermark.detect",
    "weight_similarity": "assay.watermark.similarity",
    "SimilarityResult": "assay.watermark.similarity",
    "align_chain": "assay.watermark.align",
    "match_tensors": "assay.watermark.match",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

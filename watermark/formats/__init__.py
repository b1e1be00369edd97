"""Safe readers and writers of model weights as named numpy arrays.

Formats: safetensors, torch zip archives (``torch.save``: ``.pt``/``.pth``/``.bin``/``.ckpt``),
legacy ``torch.save`` files, TorchScript archives and ONNX. Nothing here imports torch, and no
pickle is ever executed: torch files are read with an allowlisting, budgeted unpickler that builds
inert stand-ins. Every reader is bounded by :class:`Limits` (time, memory, sizes).
"""

from __future__ import annotations

from assay.watermark.formats._api import load_weights, save_weights
from assay.watermark.formats._common import Limits, TensorInfo, WeightFile
from assay.watermark.formats._detect import (
    FORMATS,
    detect_format,
    find_weight_files,
    is_model_file_name,
)

__all__ = [
    "FORMATS",
    "Limits",
    "TensorInfo",
    "WeightFile",
    "detect_format",
    "find_weight_files",
    "is_model_file_name",
    "load_weights",
    "save_weights",
]

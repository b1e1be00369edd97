"""load_weights / save_weights: one entry point over every supported format."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from assay.core.errors import FormatError, NotFoundError
from assay.watermark.formats._common import Limits, WeightFile
from assay.watermark.formats._detect import detect_format, find_weight_files


def _module(fmt: str):
    if fmt == "safetensors":
        from assay.watermark.formats import _safetensors as mod
    elif fmt in ("torch", "torchscript"):
        from assay.watermark.formats import _torch as mod
    elif fmt == "torch-legacy":
        from assay.watermark.formats import _torch_legacy as mod
    elif fmt == "onnx":
        from assay.watermark.formats import _onnx as mod
    else:  # pragma: no cover - detect_format returns only the above
        raise FormatError(f"unsupported weight format {fmt!r}")
    return mod


def load_weights(path: str | os.PathLike[str], *, limits: Limits | None = None) -> WeightFile:
    """Read the floating-point weights of a model file (or of the single model in a folder).

    Never executes code from the file: torch pickles go through an allowlist, ONNX external data
    must stay inside the model's folder, and sizes are checked against ``limits`` first.
    """
    limits = limits or Limits()
    p = Path(path)
    if p.is_dir():
        files = find_weight_files(p)
        if len(files) != 1:
            raise FormatError(
                f"{p} holds {len(files)} weight files ({', '.join(f.name for f in files[:4])}"
                f"{', ...' if len(files) > 4 else ''}); name one"
            )
        p = files[0]
    if not p.exists():
        raise NotFoundError(f"{p} does not exist")
    fmt = detect_format(p)
    wf = _module(fmt).load(p, limits)
    if not wf.tensors:
        raise FormatError(f"no floating-point weights in {p}")
    return wf


def save_weights(
    weight_file: WeightFile,
    updated: Mapping[str, np.ndarray],
    out_path: str | os.PathLike[str],
) -> Path:
    """Write ``weight_file`` to ``out_path`` in its own format with ``updated`` tensors replaced.

    Updated tensors are cast back to their original dtypes (bf16 rounded to nearest even); every
    other byte is kept where the format allows (safetensors, torch and TorchScript: bit-for-bit).
    Refuses to overwrite ``out_path``; writes through a temporary file in the same folder.
    """
    return _module(weight_file.format).save(weight_file, updated, out_path)

"""safetensors: the header is parsed and checked here; tensor bytes are read straight from the file.

The checks are those of the ``safetensors`` library: no duplicate keys, tensors that tile the data
area exactly (sorted by offset, each starting where the previous ends, from 0 to the end of the
file: no gap, no overlap, no trailing bytes), and a size that matches each shape and dtype.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assay.core.atomic import publish_new, temp_sibling
from assay.core.errors import FormatError
from assay.core.safe_json import loads_untrusted
from assay.watermark.formats._common import (
    FLOAT_DTYPES,
    RAW_NUMPY,
    Budget,
    Limits,
    TensorInfo,
    WeightFile,
    brief,
    check_elements,
    check_file_size,
    check_out_path,
    check_unchanged,
    check_updates,
    file_stamp,
    to_analysis,
)

_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "C64": "complex64",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offsets
    end: int


@dataclass(frozen=True)
class _Handle:
    entries: dict[str, _Entry]
    stamp: tuple[int, int]


def read_header(path: Path, limits: Limits) -> tuple[list[_Entry], dict[str, str]]:
    size = check_file_size(path, limits)
    if size < 8:
        raise FormatError(f"{path} is truncated: no safetensors header")
    with open(path, "rb") as fh:
        (hlen,) = struct.unpack("<Q", fh.read(8))
        if hlen > limits.max_header_bytes:
            raise FormatError(
                f"safetensors header of {path} claims {hlen} bytes, over the limit of "
                f"{limits.max_header_bytes}"
            )
        if 8 + hlen > size:
            raise FormatError(f"{path} is truncated: header claims {hlen} bytes")
        raw = fh.read(hlen)
    header = loads_untrusted(raw, what=f"safetensors header of {path}", error=FormatError)
    if not isinstance(header, dict):
        raise FormatError(f"safetensors header of {path} is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise FormatError(f"safetensors __metadata__ of {path} must map strings to strings")
    if len(header) > limits.max_tensors:
        raise FormatError(
            f"{path} holds {len(header)} tensors, over the limit of {limits.max_tensors}"
        )
    base = 8 + hlen
    entries: list[_Entry] = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise FormatError(f"tensor {brief(name)} in {path}: header entry is not an object")
        code = info.get("dtype")
        if not isinstance(code, str) or code not in _DTYPES:
            raise FormatError(f"tensor {brief(name)} in {path} has unsupported dtype {brief(code)}")
        dtype = _DTYPES[code]
        shape = info.get("shape")
        offsets = info.get("data_offsets")
        if not isinstance(shape, list) or not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        ):
            raise FormatError(f"tensor {brief(name)} in {path} has a malformed header entry")
        shape_t = tuple(shape)
        count = check_elements(name, shape_t, limits, path)
        begin, end = offsets
        if end - begin != count * np.dtype(RAW_NUMPY[dtype]).itemsize:
            raise FormatError(
                f"tensor {brief(name)} in {path}: data_offsets {brief(offsets)} do not match "
                f"shape {brief(shape)} of {code}"
            )
        if base + end > size:
            raise FormatError(
                f"{path} is truncated: tensor {brief(name)} ends past the end of the file"
            )
        entries.append(_Entry(name, dtype, shape_t, base + begin, base + end))
    ordered = sorted(entries, key=lambda e: (e.begin, e.end))
    at = base
    for cur in ordered:
        if cur.begin < at:
            raise FormatError(f"tensor {brief(cur.name)} overlaps the one before it in {path}")
        if cur.begin > at:
            raise FormatError(
                f"{path} has a gap of {cur.begin - at} bytes before {brief(cur.name)}"
            )
        at = cur.end
    if at != size:
        raise FormatError(f"{path} has {size - at} trailing bytes after its last tensor")
    return entries, dict(metadata)


def _read(fh, entry: _Entry, budget: Budget) -> np.ndarray:
    budget.take(entry.end - entry.begin, "tensor", entry.name)
    buf = bytearray(entry.end - entry.begin)
    fh.seek(entry.begin)
    if fh.readinto(buf) != len(buf):
        raise FormatError(f"short read of tensor {brief(entry.name)}")
    return np.frombuffer(buf, dtype=RAW_NUMPY[entry.dtype]).reshape(entry.shape)


def load(path: Path, limits: Limits) -> WeightFile:
    stamp = file_stamp(path)
    entries, metadata = read_header(path, limits)
    budget = Budget(limits, path.stat().st_size, path)
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    other: dict[str, TensorInfo] = {}
    with open(path, "rb") as fh:
        for e in entries:
            if e.dtype in FLOAT_DTYPES:
                if e.dtype not in ("float32", "float64"):
                    budget.take(4 * (e.end - e.begin) // 2, "tensor", e.name)
                tensors[e.name] = to_analysis(_read(fh, e, budget), e.dtype)
                dtypes[e.name] = e.dtype
            else:
                other[e.name] = TensorInfo(e.dtype, e.shape)
    return WeightFile(
        path=path,
        format="safetensors",
        tensors=tensors,
        dtypes=dtypes,
        other=other,
        metadata=metadata,
        _handle=_Handle({e.name: e for e in entries}, stamp),
    )


def save(wf: WeightFile, updated, out_path) -> Path:
    out = check_out_path(out_path)
    raw = check_updates(wf, dict(updated))
    handle: _Handle = wf._handle
    check_unchanged(wf, handle.stamp)
    with temp_sibling(out) as tmp:
        shutil.copyfile(wf.path, tmp)
        with open(tmp, "r+b") as fh:
            for name, values in raw.items():
                e = handle.entries[name]
                data = values.tobytes()
                if len(data) != e.end - e.begin:
                    raise FormatError(f"internal size mismatch writing {name!r}")
                fh.seek(e.begin)
                fh.write(data)
        publish_new(tmp, out, error=FormatError)
    return out

"""Shared pieces of the weight readers: limits, the WeightFile record, dtype helpers, atomic writes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.core.errors import FormatError

GiB = 1024**3

#: Dtypes returned for analysis, by original dtype name.
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Limits:
    """Bounds on the work and memory one weight file may cost, checked before anything is spent.

    Pass ``Limits(...)`` to :func:`load_weights` to override a default. Every reader refuses a file
    that would pass one of these with a one-line :class:`FormatError`.
    """

    max_file_bytes: int = 64 * GiB
    max_tensors: int = 100_000
    #: elements of one tensor; also bounds every single dimension (even of an empty tensor)
    max_tensor_elements: int = 16 * GiB
    #: dimensions of one tensor (numpy's own maximum is 64)
    max_tensor_dims: int = 32
    #: safetensors JSON header and torch pickles (an ONNX protobuf is bounded by its 2 GiB format
    #: limit, its graph by ``max_graph_nodes``)
    max_header_bytes: int = 100 * 1024**2
    #: pickle opcodes executed plus the items its stand-ins copy (REDUCE arguments, BUILD state,
    #: set and dict items), per pickle
    max_pickle_ops: int = 10_000_000
    #: pickle memo entries (PUT / MEMOIZE), per pickle
    max_pickle_memo: int = 2_000_000
    #: bytes of one pickled integer (LONG1/LONG4); a dimension needs 8
    max_pickle_int_bytes: int = 16
    #: memory one load may allocate for tensor bytes (decompressed records, strided copies,
    #: dtype conversions): ``alloc_ratio * (real bytes on disk) + alloc_slack_bytes``
    alloc_ratio: float = 4.0
    alloc_slack_bytes: int = 64 * 1024**2
    #: characters of a flattened tensor name
    max_name_chars: int = 4096
    #: nodes of an ONNX model, subgraphs and functions included
    max_graph_nodes: int = 1_000_000


class Budget:
    """The allocation budget of one load: what the file's real bytes allow, charged as spent."""

    def __init__(self, limits: Limits, real_bytes: int, where: Path) -> None:
        self.allowed = int(limits.alloc_ratio * real_bytes) + limits.alloc_slack_bytes
        self.spent = 0
        self.where = where

    def take(self, nbytes: int, what: str, name: object = None) -> None:
        """Charge ``nbytes`` for ``what`` (e.g. "tensor", its name); FormatError when over."""
        self.spent += nbytes
        if self.spent > self.allowed:
            if name is not None:
                what = f"{what} {brief(name)}"
            raise FormatError(
                f"{self.where}: {what} would bring the memory this file needs to {self.spent} "
                f"bytes, over its budget of {self.allowed} (Limits.alloc_ratio x its real bytes)"
            )


@dataclass(frozen=True)
class TensorInfo:
    """A tensor that is kept in the file but not returned for analysis."""

    dtype: str
    shape: tuple[int, ...]
    reason: str = "not floating-point"


@dataclass
class WeightFile:
    """Named floating-point weights read from one file, plus what is needed to write them back.

    ``tensors`` holds every floating-point weight in file order as float32 (float64 stays float64);
    ``dtypes`` gives each one's original dtype (``float32``, ``float16``, ``bfloat16``, ``float64``).
    ``other`` describes tensors that were read past: integers, bools, float8, optimizer state.
    """

    path: Path
    format: str
    tensors: dict[str, np.ndarray]
    dtypes: dict[str, str]
    other: dict[str, TensorInfo] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    _handle: Any = field(default=None, repr=False, compare=False)

    @property
    def tensor_count(self) -> int:
        return len(self.tensors)

    @property
    def parameter_count(self) -> int:
        return int(sum(a.size for a in self.tensors.values()))

    def iter_float_tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        yield from self.tensors.items()


# ---------------------------------------------------------------------------------------------
# dtype conversions


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 (exact)."""
    out = bits.astype(np.uint32)
    out <<= 16  # in place: one float32-sized array, not two
    return out.view(np.float32)


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bit patterns, rounding to nearest even; NaN stays NaN."""
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((u + (((u >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def to_analysis(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Raw little-endian storage values (uint16 for bf16) -> float32/float64 analysis array."""
    if dtype == "bfloat16":
        return bf16_bits_to_f32(raw)
    if dtype == "float64":
        return raw.astype(np.float64, copy=False)
    if dtype == "float32":
        return raw.astype(np.float32, copy=False)
    return raw.astype(np.float32)


def from_analysis(values: np.ndarray, dtype: str) -> np.ndarray:
    """Analysis array -> raw little-endian values in the original dtype (uint16 bits for bf16)."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating) and not np.issubdtype(values.dtype, np.integer):
        raise FormatError(f"updated values must be real numbers, got {values.dtype}")
    if dtype == "bfloat16":
        return f32_to_bf16_bits(values.astype(np.float32))
    return values.astype(np.dtype(RAW_NUMPY[dtype]).newbyteorder("<"))


#: Our dtype names -> little-endian numpy storage dtype (bf16 and float8 kept as raw bits).
RAW_NUMPY: dict[str, str] = {
    "float64": "<f8",
    "float32": "<f4",
    "float16": "<f2",
    "bfloat16": "<u2",
    "float8_e4m3fn": "u1",
    "float8_e5m2": "u1",
    "float8_e4m3fnuz": "u1",
    "float8_e5m2fnuz": "u1",
    "float8_e8m0fnu": "u1",
    "complex64": "<c8",
    "complex128": "<c16",
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "i1",
    "uint64": "<u8",
    "uint32": "<u4",
    "uint16": "<u2",
    "uint8": "u1",
    "bool": "?",
}


def itemsize(dtype: str) -> int:
    return np.dtype(RAW_NUMPY[dtype]).itemsize


def check_elements(name: str, shape: tuple[int, ...], limits: Limits, where: Path) -> int:
    """Element count of ``shape``; FormatError for a shape numpy could not even describe."""
    if len(shape) > limits.max_tensor_dims:
        raise FormatError(
            f"tensor {brief(name)} in {where} has {len(shape)} dimensions, over the limit of "
            f"{limits.max_tensor_dims}"
        )
    count = 1
    nonzero = 1
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise FormatError(f"tensor {brief(name)} in {where} has an invalid shape")
        count *= dim
        nonzero *= dim or 1
        if nonzero > limits.max_tensor_elements:
            break
    if nonzero > limits.max_tensor_elements:
        raise FormatError(
            f"tensor {brief(name)} in {where} has shape {brief(list(shape))}, over the limit of "
            f"{limits.max_tensor_elements} elements"
        )
    return count


def brief(value: object, width: int = 60) -> str:
    """A short, bounded description of untrusted ``value`` for an error message.

    Never calls ``str``/``repr`` on containers (a pickled DAG can make them exponential).
    """
    if isinstance(value, str):
        return repr(value[:width] + ("..." if len(value) > width else ""))
    if isinstance(value, (bool, float)) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else f"<{value.bit_length()}-bit int>"
    if (
        isinstance(value, (list, tuple))
        and len(value) <= 8
        and all(
            isinstance(v, int) and not isinstance(v, bool) and v.bit_length() <= 64 for v in value
        )
    ):
        return str(list(value))
    return f"<{type(value).__name__}>"


def check_file_size(path: Path, limits: Limits) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if size == 0:
        raise FormatError(f"{path} is empty")
    if size > limits.max_file_bytes:
        raise FormatError(f"{path} is {size} bytes, over the limit of {limits.max_file_bytes}")
    return size


def check_updates(wf: WeightFile, updated: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate names and shapes of updated tensors; return raw arrays in the original dtypes."""
    raw: dict[str, np.ndarray] = {}
    for name, values in updated.items():
        if name not in wf.tensors:
            raise FormatError(f"no floating-point tensor named {name!r} in {wf.path}")
        values = np.asarray(values)
        if values.shape != wf.tensors[name].shape:
            raise FormatError(
                f"updated tensor {name!r} has shape {list(values.shape)}, "
                f"expected {list(wf.tensors[name].shape)}"
            )
        raw[name] = np.ascontiguousarray(from_analysis(values, wf.dtypes[name]))
    return raw


def file_stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def check_unchanged(wf: WeightFile, stamp: tuple[int, int]) -> None:
    try:
        now = file_stamp(wf.path)
    except OSError as exc:
        raise FormatError(f"{wf.path} is no longer readable: {exc.strerror or exc}") from exc
    if now != stamp:
        raise FormatError(f"{wf.path} changed since it was loaded; load it again")


# ---------------------------------------------------------------------------------------------
# atomic output


def check_out_path(out_path: Path | str) -> Path:
    out = Path(out_path)
    if out.exists() or out.is_symlink():
        raise FormatError(f"{out} exists; refusing to overwrite it")
    if not out.parent.is_dir():
        raise FormatError(f"folder {out.parent} does not exist")
    return out

"""torch.save zip archives and TorchScript archives, read without torch and without running pickles.

Both formats are zip files with ``<prefix>/data.pkl`` (a pickle whose tensors point at
``<prefix>/data/<key>`` records by persistent id). The pickle goes through the restricted
unpickler in :mod:`._pickle`; tensor bytes are read straight from the stored zip records.

Writing back never re-serialises anything: the output is a byte copy of the input with the updated
tensors' bytes overwritten inside their records and the zip CRCs fixed. Names, order, metadata,
non-float tensors, TorchScript code and every other byte stay as they were, and the result loads
with ``torch.load`` / ``torch.jit.load`` like the original.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from assay.core.atomic import publish_new, temp_sibling
from assay.core.errors import FormatError, UnsafeInputError
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
    itemsize,
    to_analysis,
)
from assay.watermark.formats._pickle import (
    PickleBudget,
    PickleStream,
    Refused,
    ScriptObject,
    StorageRef,
    TensorRef,
)
from assay.watermark.formats._zip import ZipIndex, patch_record

_MAX_DEPTH = 64


class StorageSource(Protocol):
    """Where a torch file keeps its storages' bytes (zip records, or a legacy file's tail)."""

    def size(self, record: str) -> int | None: ...

    def read(self, record: str, budget: Budget | None = None) -> bytearray: ...

    def patch(self, fh, record: str, data: bytes) -> None: ...


@dataclass(frozen=True)
class Slot:
    record: str
    ref: TensorRef


@dataclass(frozen=True)
class _Handle:
    source: StorageSource
    slots: dict[str, Slot]
    stamp: tuple[int, int]


class _ZipSource:
    def __init__(self, index: ZipIndex) -> None:
        self.index = index

    def size(self, record: str) -> int | None:
        rec = self.index.records.get(record)
        return None if rec is None else rec.size

    def read(self, record: str, budget: Budget | None = None) -> bytearray:
        return self.index.read(record, budget=budget)

    def patch(self, fh, record: str, data: bytes) -> None:
        patch_record(fh, self.index.records[record], data)


def archive_layout(names: list[str]) -> tuple[str, bool]:
    """Return (prefix, is_torchscript) of a torch zip archive, or raise FormatError."""
    pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise FormatError("zip archive is not a torch file (no single <name>/data.pkl)")
    prefix = pkls[0][: -len("data.pkl")]
    script = any(
        n.startswith(prefix + "code/") or n in (prefix + "constants.pkl", prefix + "bytecode.pkl")
        for n in names
    )
    return prefix, script


def pickle_budget(limits: Limits) -> PickleBudget:
    return PickleBudget(
        max_ops=limits.max_pickle_ops,
        max_memo=limits.max_pickle_memo,
        max_int_bytes=limits.max_pickle_int_bytes,
    )


_WALKED = (TensorRef, dict, list, tuple, ScriptObject)


def flatten(obj: Any, limits: Limits) -> list[tuple[str, TensorRef]]:
    """Every tensor reachable from ``obj``, named by its dotted path (first path wins)."""
    out: list[tuple[str, TensorRef]] = []
    _flatten(obj, "", out, 0, set(), limits)
    return out


def _flatten(
    obj: Any, prefix: str, out: list[tuple[str, TensorRef]], depth: int, seen: set[int], limits
) -> None:
    if isinstance(obj, TensorRef):
        out.append((prefix, obj))
        if len(out) > limits.max_tensors:
            raise FormatError(f"pickle holds over {limits.max_tensors} tensors")
        return
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    elif isinstance(obj, ScriptObject):
        state = obj.state
        if isinstance(state, dict):
            items = state.items()
        elif isinstance(state, (list, tuple)):
            items = enumerate(state)
        else:
            return
    else:
        return
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if depth > _MAX_DEPTH:
        raise FormatError(f"pickle nests containers deeper than {_MAX_DEPTH} levels")
    for key, value in items:
        if not isinstance(value, _WALKED):
            continue
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            continue
        part = key if isinstance(key, str) else str(key)
        if len(prefix) + len(part) + 1 > limits.max_name_chars:
            raise FormatError(f"a tensor name is longer than {limits.max_name_chars} characters")
        name = f"{prefix}.{part}" if prefix else part
        _flatten(value, name, out, depth + 1, seen, limits)


def _is_optimizer(name: str) -> bool:
    head = name.split(".", 1)[0].lower()
    return "optim" in head or "scheduler" in head


def unpickle(stream: PickleStream, path: Path) -> Any:
    """The next pickle of ``stream``, with assay's errors naming ``path``."""
    try:
        return stream.load()
    except Refused as exc:
        raise UnsafeInputError(
            f"refusing to load {path}: pickle references {exc.what}; "
            "only plain tensor state dicts are accepted"
        ) from None
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from exc


def _unpickle_record(index: ZipIndex, record: str, path: Path, limits: Limits, script: bool):
    data = index.read(record, max_bytes=limits.max_header_bytes)
    stream = PickleStream(
        bytes(data), script=script, max_storages=limits.max_tensors, budget=pickle_budget(limits)
    )
    return unpickle(stream, path)


def _storage_array(buf: bytearray, ref: TensorRef) -> np.ndarray:
    dt = np.dtype(RAW_NUMPY[ref.dtype])
    usable = len(buf) - len(buf) % dt.itemsize
    return np.frombuffer(memoryview(buf)[:usable], dtype=dt)


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for dim, st in zip(reversed(shape), reversed(stride), strict=True):
        if dim != 1 and st != expected:
            return False
        expected *= dim
    return True


def _view(flat: np.ndarray, ref: TensorRef) -> np.ndarray:
    count = math.prod(ref.shape)
    if count == 0:
        return np.zeros(ref.shape, dtype=flat.dtype)
    if _is_contiguous(ref.shape, ref.stride):
        return flat[ref.offset : ref.offset + count].reshape(ref.shape)
    item = flat.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.shape, strides=tuple(s * item for s in ref.stride)
    )


def check_slots(
    leaves: list[tuple[str, TensorRef, str]], source: StorageSource, path: Path, limits: Limits
) -> dict[str, Slot]:
    """Validate every tensor against its storage before reading anything."""
    if len(leaves) > limits.max_tensors:
        raise FormatError(
            f"{path} holds {len(leaves)} tensors, over the limit of {limits.max_tensors}"
        )
    slots: dict[str, Slot] = {}
    for name, ref, folder in leaves:
        if name in slots:
            raise FormatError(f"{path}: two tensors flatten to the same name {brief(name)}")
        if ref.dtype not in RAW_NUMPY:
            raise FormatError(f"{path}: tensor {brief(name)} has unsupported dtype {ref.dtype}")
        count = check_elements(name, ref.shape, limits, path)
        record = folder + ref.storage.key
        size = source.size(record)
        if size is None:
            raise FormatError(
                f"{path}: tensor {brief(name)} points at missing record {brief(record)}"
            )
        storage = ref.storage
        nbytes = storage_bytes(storage)
        if size != nbytes:
            raise FormatError(f"{path}: record {brief(record)} does not match its storage size")
        if storage.dtype is not None and storage.dtype != ref.dtype:
            raise FormatError(f"{path}: tensor {brief(name)} disagrees with its storage's dtype")
        elements = nbytes // itemsize(ref.dtype)
        if count:
            last = ref.offset + sum((d - 1) * s for d, s in zip(ref.shape, ref.stride, strict=True))
            if last >= elements:
                raise FormatError(f"{path}: tensor {brief(name)} reaches past its storage")
        slots[name] = Slot(record, ref)
    return slots


def storage_bytes(storage: StorageRef) -> int:
    return storage.numel if storage.dtype is None else storage.numel * itemsize(storage.dtype)


def read_tensors(
    slots: dict[str, Slot], source: StorageSource, budget: Budget
) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, TensorInfo]]:
    """The floating-point tensors as analysis arrays, in file order, within ``budget``.

    A strided (stride-0, overlapping) or shared view is copied, and the copy is charged first:
    a few stored bytes can never be materialised into more than the budget allows.
    """
    users: dict[str, int] = {}
    for slot in slots.values():
        users[slot.record] = users.get(slot.record, 0) + 1
    other: dict[str, TensorInfo] = {}
    wanted: list[str] = []
    for name, slot in slots.items():
        if slot.ref.dtype not in FLOAT_DTYPES:
            other[name] = TensorInfo(slot.ref.dtype, slot.ref.shape)
        elif _is_optimizer(name):
            other[name] = TensorInfo(slot.ref.dtype, slot.ref.shape, "optimizer state")
        else:
            wanted.append(name)
    by_record: dict[str, list[str]] = {}
    for name in wanted:
        by_record.setdefault(slots[name].record, []).append(name)
    arrays: dict[str, np.ndarray] = {}
    for record, names in by_record.items():
        buf = source.read(record, budget)
        for name in names:
            ref = slots[name].ref
            count = math.prod(ref.shape)
            out_size = 8 if ref.dtype == "float64" else 4
            contiguous = _is_contiguous(ref.shape, ref.stride)
            converts = ref.dtype not in ("float32", "float64")
            copies = int(converts) + int(users[record] > 1 or not contiguous)
            if copies:
                budget.take(copies * count * out_size, "tensor", name)
            raw = _view(_storage_array(buf, ref), ref)
            arr = to_analysis(raw, ref.dtype)
            if users[record] > 1 or not arr.flags.c_contiguous:
                arr = np.array(arr, order="C")
            arrays[name] = arr
    tensors = {name: arrays[name] for name in wanted}  # file order
    dtypes = {name: slots[name].ref.dtype for name in wanted}
    return tensors, dtypes, other


@dataclass(frozen=True)
class Located:
    """A torch zip archive parsed and checked, no tensor read: its index and tensor slots."""

    index: ZipIndex
    slots: dict[str, Slot]
    script: bool
    size: int
    stamp: tuple[int, int]


def locate(path: Path, limits: Limits) -> Located:
    """Parse and check a torch (or TorchScript) zip archive without reading any tensor: every
    check of :func:`load` (the pickles through the allow-list, every tensor against its
    storage record)."""
    stamp = file_stamp(path)
    size = check_file_size(path, limits)
    index = ZipIndex(path, max_entries=2 * limits.max_tensors + 10_000)
    try:
        prefix, script = archive_layout(index.names())
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
    order = index.records.get(prefix + "byteorder")
    if order is not None and bytes(index.read(order.name, max_bytes=16)) != b"little":
        raise FormatError(f"{path} was saved on a big-endian machine; not supported")

    leaves: list[tuple[str, TensorRef, str]] = []  # (name, ref, record folder)
    obj = _unpickle_record(index, prefix + "data.pkl", path, limits, script)
    leaves.extend((n, r, prefix + "data/") for n, r in flatten(obj, limits))
    if script and prefix + "constants.pkl" in index.records:
        consts = _unpickle_record(index, prefix + "constants.pkl", path, limits, script)
        if isinstance(consts, (tuple, list)):
            for i, c in enumerate(consts):
                if isinstance(c, TensorRef):
                    leaves.append((f"CONSTANTS.c{i}", c, prefix + "constants/"))
    slots = check_slots(leaves, _ZipSource(index), path, limits)
    return Located(index, slots, script, size, stamp)


def streamable(found: Located) -> dict[str, tuple[int, int]] | None:
    """``name -> (begin, end)`` file byte ranges of every floating-point weight (optimizer state
    aside) when each is a contiguous run of bytes of a stored (uncompressed) record, else None."""
    ranges: dict[str, tuple[int, int]] = {}
    for name, slot in found.slots.items():
        ref = slot.ref
        if ref.dtype not in FLOAT_DTYPES or _is_optimizer(name):
            continue
        rec = found.index.records[slot.record]
        if rec.compressed or not _is_contiguous(ref.shape, ref.stride):
            return None
        size = itemsize(ref.dtype)
        begin = rec.data_offset + ref.offset * size
        ranges[name] = (begin, begin + math.prod(ref.shape) * size)
    return ranges


def overlapping(ranges: dict[str, tuple[int, int]]) -> tuple[str, str] | None:
    """Two weights whose byte ranges overlap (tied weights, views of one storage), or None.

    In-place writing marks tensor by tensor, so the second of two such weights would be read
    already marked; ``save`` instead marks both from the stored values and requires the updates
    to agree. Such an archive is therefore written eagerly (``save``), never in place.
    """
    spans = sorted((b, e, n) for n, (b, e) in ranges.items() if e > b)
    for (_, a_end, a), (b_start, _, b) in zip(spans, spans[1:], strict=False):
        if b_start < a_end:
            return a, b
    return None


def other_tensors(found: Located) -> dict[str, TensorInfo]:
    """The tensors :func:`read_tensors` does not return as weights (integers, optimizer state)."""
    other: dict[str, TensorInfo] = {}
    for name, slot in found.slots.items():
        if slot.ref.dtype not in FLOAT_DTYPES:
            other[name] = TensorInfo(slot.ref.dtype, slot.ref.shape)
        elif _is_optimizer(name):
            other[name] = TensorInfo(slot.ref.dtype, slot.ref.shape, "optimizer state")
    return other


def load(path: Path, limits: Limits) -> WeightFile:
    found = locate(path, limits)
    source = _ZipSource(found.index)
    tensors, dtypes, other = read_tensors(found.slots, source, Budget(limits, found.size, path))
    return WeightFile(
        path=path,
        format="torchscript" if found.script else "torch",
        tensors=tensors,
        dtypes=dtypes,
        other=other,
        metadata={},
        _handle=_Handle(source, found.slots, found.stamp),
    )


def save(wf: WeightFile, updated, out_path) -> Path:
    """Byte copy of ``wf``'s file with the updated tensors' storages patched in place."""
    out = check_out_path(out_path)
    raw = check_updates(wf, dict(updated))
    handle: _Handle = wf._handle
    check_unchanged(wf, handle.stamp)
    by_record: dict[str, list[str]] = {}
    for name in raw:
        by_record.setdefault(handle.slots[name].record, []).append(name)
    with temp_sibling(out) as tmp:
        shutil.copyfile(wf.path, tmp)
        with open(tmp, "r+b") as fh:
            for record, names in by_record.items():
                buf = handle.source.read(record)
                for name in names:
                    ref = handle.slots[name].ref
                    _view(_storage_array(buf, ref), ref)[...] = raw[name].reshape(ref.shape)
                for name in names:  # tied tensors must agree
                    ref = handle.slots[name].ref
                    got = _view(_storage_array(buf, ref), ref)
                    if got.tobytes() != raw[name].tobytes():
                        raise FormatError(
                            f"tensor {name!r} shares its storage with another updated tensor "
                            "and the updates disagree"
                        )
                handle.source.patch(fh, record, bytes(buf))
        publish_new(tmp, out, error=FormatError)
    return out

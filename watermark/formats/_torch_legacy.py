"""Legacy ``torch.save`` files (``_use_new_zipfile_serialization=False``), read without running them.

The file is five pickles and the raw storages::

    magic number (0x1950a86a20f9469cfc6c) | protocol (1001) | sys info {little_endian, type_sizes}
    | the object (tensors as persistent ids ('storage', type, key, location, numel, None))
    | the storage keys, in file order | per key: int64 element count, then the storage's bytes

Every pickle goes through the same allow-listing, budgeted unpickler as a zip archive's
``data.pkl``; the storages are then located by walking the count/bytes records, and each must be
exactly the size its persistent id declared. Writing back patches storage bytes in a copy.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

from assay.core.errors import FormatError
from assay.watermark.formats._common import (
    Budget,
    Limits,
    WeightFile,
    brief,
    check_file_size,
    file_stamp,
)
from assay.watermark.formats._pickle import (
    PickleBudget,
    PickleStream,
    PickleTruncated,
    Refused,
    StorageRef,
)
from assay.watermark.formats._torch import (
    _Handle,
    check_slots,
    flatten,
    pickle_budget,
    read_tensors,
    storage_bytes,
    unpickle,
)
from assay.watermark.formats._torch import save as _save_torch

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_SNIFF_BYTES = 64


def is_legacy(head: bytes) -> bool:
    """Whether ``head`` (the file's first bytes) starts with torch's legacy magic-number pickle."""
    stream = PickleStream(
        head[:_SNIFF_BYTES],
        script=False,
        max_storages=0,
        budget=PickleBudget(max_ops=64, max_memo=8, max_int_bytes=16),
    )
    try:
        first = stream.load()
    except (Refused, FormatError):
        return False
    return type(first) is int and first == MAGIC_NUMBER


class _LegacySource:
    """The storages of a legacy file: (offset, length) of each key's bytes."""

    def __init__(self, path: Path, spans: dict[str, tuple[int, int]]) -> None:
        self.path = path
        self.spans = spans

    def size(self, record: str) -> int | None:
        span = self.spans.get(record)
        return None if span is None else span[1]

    def read(self, record: str, budget: Budget | None = None) -> bytearray:
        offset, length = self.spans[record]
        if budget is not None:
            budget.take(length, "storage", record)
        buf = bytearray(length)
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            if fh.readinto(buf) != length:
                raise FormatError(f"{self.path} is truncated: storage {brief(record)}")
        return buf

    def patch(self, fh, record: str, data: bytes) -> None:
        offset, length = self.spans[record]
        if len(data) != length:
            raise FormatError(f"internal size mismatch patching storage {brief(record)}")
        fh.seek(offset)
        fh.write(data)


def _expect(value: Any, ok: bool, what: str, path: Path) -> Any:
    if not ok:
        raise FormatError(f"{path} is not a legacy torch file: {what}")
    return value


def _storage_spans(
    path: Path, size: int, start: int, keys: list[str], storages: dict[str, StorageRef]
) -> dict[str, tuple[int, int]]:
    spans: dict[str, tuple[int, int]] = {}
    pos = start
    with open(path, "rb") as fh:
        for key in keys:
            ref = storages[key]
            nbytes = storage_bytes(ref)
            fh.seek(pos)
            head = fh.read(8)
            if len(head) != 8:
                raise FormatError(f"{path} is truncated: storage {brief(key)}")
            (count,) = struct.unpack("<q", head)
            if count != ref.numel:
                raise FormatError(
                    f"{path}: storage {brief(key)} holds {count} elements, its record says "
                    f"{ref.numel}"
                )
            if pos + 8 + nbytes > size:
                raise FormatError(f"{path} is truncated: storage {brief(key)}")
            spans[key] = (pos + 8, nbytes)
            pos += 8 + nbytes
    if pos != size:
        raise FormatError(f"{path} has {size - pos} trailing bytes after its last storage")
    return spans


_FIRST_READ = 1 << 20


def _read_pickles(path: Path, size: int, limits: Limits) -> tuple[Any, list[str], PickleStream]:
    """The five pickles from the head of the file: read 1 MiB first, more only if they need it.

    Every attempt draws on the same work budget, so retrying never buys an attacker more work.
    """
    limit = min(size, limits.max_header_bytes)
    want = min(limit, _FIRST_READ)
    budget = pickle_budget(limits)
    while True:
        with open(path, "rb") as fh:
            head = fh.read(want)
        stream = PickleStream(head, script=False, max_storages=limits.max_tensors, budget=budget)
        try:
            return _parse_pickles(path, stream) + (stream,)
        except FormatError as exc:
            if not isinstance(exc.__cause__, PickleTruncated) or want >= limit:
                raise
        budget = replace(budget, max_ops=max(1, budget.max_ops - stream.work))
        want = min(limit, want * 8)


def _parse_pickles(path: Path, stream: PickleStream) -> tuple[Any, list[str]]:
    magic = unpickle(stream, path)
    _expect(magic, type(magic) is int and magic == MAGIC_NUMBER, "no magic number", path)
    protocol = unpickle(stream, path)
    _expect(protocol, type(protocol) is int, "no protocol version", path)
    if protocol != PROTOCOL_VERSION:
        raise FormatError(f"{path}: legacy torch protocol {brief(protocol)} is not supported")
    info = unpickle(stream, path)
    _expect(info, isinstance(info, dict), "no system information", path)
    if info.get("little_endian") is not True:
        raise FormatError(f"{path} was saved on a big-endian machine; not supported")
    obj = unpickle(stream, path)
    keys = unpickle(stream, path)
    return obj, keys


def load(path: Path, limits: Limits) -> WeightFile:
    stamp = file_stamp(path)
    size = check_file_size(path, limits)
    obj, keys, stream = _read_pickles(path, size, limits)
    storages = stream.storages
    if (
        not isinstance(keys, list)
        or not all(isinstance(k, str) for k in keys)
        or len(set(keys)) != len(keys)
        or set(keys) != set(storages)
    ):
        raise FormatError(f"{path}: legacy storage key list does not match the storages named")
    spans = _storage_spans(path, size, stream.tell(), keys, storages)
    source = _LegacySource(path, spans)
    leaves = [(n, r, "") for n, r in flatten(obj, limits)]
    slots = check_slots(leaves, source, path, limits)
    tensors, dtypes, other = read_tensors(slots, source, Budget(limits, size, path))
    return WeightFile(
        path=path,
        format="torch-legacy",
        tensors=tensors,
        dtypes=dtypes,
        other=other,
        metadata={},
        _handle=_Handle(source, slots, stamp),
    )


def save(wf: WeightFile, updated, out_path) -> Path:
    """Byte copy of the legacy file with the updated storages' bytes overwritten in place."""
    return _save_torch(wf, updated, out_path)

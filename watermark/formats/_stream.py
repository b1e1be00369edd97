"""Stream a model's weights: one tensor in memory at a time, read straight from the file(s).

:func:`open_weights` returns a :class:`TensorSource`, a read-on-access mapping of tensor name to
float32 (float64 stays float64) array. For safetensors (one file, or a sharded checkpoint with its
``*.safetensors.index.json``) only the headers are parsed up front, with every check of the eager
reader (``_safetensors.read_header``); each access reads that tensor's bytes, converts bf16/fp16 to
float32 by itself, and nothing is cached, so callers hold only the tensors they are working on.
:meth:`TensorSource.blocks` reads one tensor a block at a time (float32 per block: a bf16/fp16
tensor is never held whole in float32), :meth:`TensorSource.sample` reads a few elements (one
``pread`` each), and :meth:`TensorSource.write` patches one tensor's bytes in place.

torch zip archives and TorchScript are streamed the same way from their stored, uncompressed
records, after every check of the eager reader (``_torch.locate``: the pickles through the
allow-list, each tensor against its storage record), when every weight is a contiguous run of a
stored record. ONNX models with external data are streamed after every check of the eager reader
(``_onnx.locate``: the graph bounded, every location confined to the model's folder, every offset
and length within its file): a tensor in external data is read from its file on access, the few
kept inside the protobuf are held in memory (as their stored values, converted per block like the
rest). A file that shrinks or goes away after the source was opened gives a one-line FormatError on
access (short read), and ``write`` and ``finish`` check each file's size and mtime first.

Opened ``writable``, a source is :attr:`TensorSource.in_place` when its format can be patched in
place, and :meth:`TensorSource.finish` (called once after the last write, by
``streaming.embed_source``) completes it: nothing for safetensors; for a torch archive the CRC-32 of
every patched record, recomputed a block at a time, in its local header (or data descriptor) and
central directory entry; for ONNX an atomic rewrite of the protobuf when a held (inline) tensor was
written, every external reference unchanged. A torch archive whose weights share bytes (tied
weights, overlapping views) or an ONNX model whose tensors share external bytes (or keep them in
the model file itself) is not written in place: marking tensor by tensor would read the second
name already marked, so ``save_weights`` (which marks every name from the stored values and
requires tied updates to agree) writes it. Only ever open a private copy writable; ``probe=True``
makes the writable checks on a file that must not change. Others (a compressed or strided torch
archive, legacy torch, an ONNX model without external data, which is all in the protobuf anyway)
are read by the eager readers and wrapped in the same interface: correct, but not streamed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from assay.core.errors import FormatError, NotFoundError
from assay.watermark.formats._common import (
    FLOAT_DTYPES,
    RAW_NUMPY,
    Limits,
    TensorInfo,
    WeightFile,
    brief,
    file_stamp,
    from_analysis,
    to_analysis,
)

_STEP = 1 << 20  # elements converted per write


@dataclass(frozen=True)
class _Loc:
    """Where a tensor's stored bytes are: ``file[begin:end]``, or, with ``held``, in memory (its
    little-endian storage values, flat: an inline ONNX tensor; ``file`` is then the model file)."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int
    held: np.ndarray | None = field(default=None, repr=False, compare=False)


class TensorSource(Mapping[str, np.ndarray]):
    """The floating-point weights of one model, read on access (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        locs: dict[str, _Loc] | None = None,
        eager: WeightFile | None = None,
        other: dict[str, TensorInfo] | None = None,
        *,
        writable: bool = False,
        finisher: Callable[[dict[str, _Loc]], None] | None = None,
        stamps: dict[Path, tuple[int, int]] | None = None,
    ) -> None:
        self.path = path
        self.format = fmt
        self.writable = writable
        self._finisher = finisher
        self.probe = False  # set by open_weights(probe=True): in_place is told, write refused
        self._written: set[str] = set()
        self._locs = locs or {}
        self._eager = eager
        self.other = other or (eager.other if eager is not None else {})
        if eager is not None:
            self.shapes = {n: tuple(a.shape) for n, a in eager.tensors.items()}
            self.dtypes = dict(eager.dtypes)
        else:
            self.shapes = {n: loc.shape for n, loc in self._locs.items()}
            self.dtypes = {n: loc.dtype for n, loc in self._locs.items()}
        self._stamps = {loc.file: file_stamp(loc.file) for loc in self._locs.values()}
        self._stamps.update(stamps or {})

    @property
    def streamed(self) -> bool:
        """Whether tensors are read on access (rather than all held by an eager reader)."""
        return self._eager is None

    @property
    def in_place(self) -> bool:
        """Whether :meth:`write` patches the file(s) in place (streamed and opened writable)."""
        return self.streamed and self.writable

    @property
    def fresh(self) -> bool:
        """Whether every access returns a new array the caller may modify."""
        return self.streamed

    @property
    def files(self) -> list[Path]:
        """The files tensors are read from (for ONNX, the model file only if it holds some)."""
        return sorted({loc.file for loc in self._locs.values()}) if self.streamed else [self.path]

    @property
    def weight_file(self) -> WeightFile | None:
        """The eager reader's record, for formats that are not streamed."""
        return self._eager

    def __len__(self) -> int:
        return len(self.shapes)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __contains__(self, name: object) -> bool:
        return name in self.shapes

    def nbytes(self, name: str) -> int:
        loc = self._locs.get(name)
        if loc is not None:
            return loc.end - loc.begin
        return int(self._eager.tensors[name].nbytes) if self._eager else 0

    def __getitem__(self, name: str) -> np.ndarray:
        if self._eager is not None:
            return self._eager.tensors[name]
        loc = self._locs[name]
        count = math.prod(loc.shape)
        if loc.dtype in ("float32", "float64"):  # stored as analysed: read straight into it
            if loc.held is not None:
                return loc.held.copy().reshape(loc.shape)
            raw = np.empty(count, dtype=RAW_NUMPY[loc.dtype])  # filled by the read, not zeroed
            with _open(loc.file, "rb", buffering=0) as fh:
                _read_into(fh, loc.begin, raw, name, loc.file)
            return to_analysis(raw, loc.dtype).reshape(loc.shape)
        # half precision: converted a block at a time into the float32 result, so the whole
        # tensor is never held twice (raw bits and float32)
        out = np.empty(count, dtype=np.float32)
        for at, block in self._raw_blocks(loc, name, 0, count, _STEP):
            out[at : at + block.size] = to_analysis(block, loc.dtype)
        return out.reshape(loc.shape)

    def blocks(self, name: str, step: int = _STEP) -> Iterator[np.ndarray]:
        """Tensor ``name`` flat (C order) as consecutive float32/float64 blocks of ``step``
        elements (the last one shorter): only one block is in memory at a time."""
        if self._eager is not None:
            flat = np.ascontiguousarray(self._eager.tensors[name]).reshape(-1)
            for at in range(0, flat.size, step):
                yield flat[at : at + step]
            return
        loc = self._locs[name]
        for _, block in self._raw_blocks(loc, name, 0, math.prod(loc.shape), step):
            yield to_analysis(block, loc.dtype)

    def _raw_blocks(
        self, loc: _Loc, name: str, start: int, stop: int, step: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(offset, raw block)`` over elements ``start:stop`` of ``loc``, each a new array."""
        if loc.held is not None:
            for at in range(start, stop, step):
                yield at - start, loc.held[at : min(at + step, stop)].copy()
            return
        dtype = np.dtype(RAW_NUMPY[loc.dtype])
        with _open(loc.file, "rb", buffering=0) as fh:
            for at in range(start, stop, step):
                block = np.empty(min(step, stop - at), dtype=dtype)  # filled by the read
                _read_into(fh, loc.begin + at * dtype.itemsize, block, name, loc.file)
                yield at - start, block

    def sample(self, name: str, flat: np.ndarray) -> np.ndarray:
        """The values at flat (C-order) positions ``flat`` of tensor ``name``, as float64."""
        flat = np.asarray(flat, dtype=np.int64)
        count = math.prod(self.shapes[name])
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= count):
            raise FormatError(f"sample positions outside tensor {brief(name)}")
        if self._eager is not None:
            return np.asarray(self._eager.tensors[name].reshape(-1)[flat], dtype=np.float64)
        loc = self._locs[name]
        flat = flat.reshape(-1)
        if loc.held is not None:
            return np.asarray(to_analysis(loc.held[flat], loc.dtype), dtype=np.float64)
        size = np.dtype(RAW_NUMPY[loc.dtype]).itemsize
        buf = bytearray(flat.size * size)
        # one pread per element: no mapping a file can shrink under
        with _open(loc.file, "rb") as fh:
            fd = fh.fileno()
            for j, i in enumerate(flat.tolist()):
                piece = os.pread(fd, size, loc.begin + i * size)
                if len(piece) != size:
                    raise FormatError(f"short read of tensor {brief(name)} in {loc.file}")
                buf[j * size : (j + 1) * size] = piece
        raw = np.frombuffer(buf, dtype=RAW_NUMPY[loc.dtype])
        return np.asarray(to_analysis(raw, loc.dtype), dtype=np.float64)

    def write(self, name: str, values: np.ndarray) -> None:
        """Overwrite tensor ``name`` in its file with ``values`` (cast back to its stored dtype)."""
        loc = self._locs.get(name)
        if not self.writable or self.probe or loc is None:
            raise FormatError(f"{self.path} was not opened for in-place writing")
        values = np.asarray(values)
        if tuple(values.shape) != loc.shape:
            raise FormatError(
                f"updated tensor {brief(name)} has shape {list(values.shape)}, "
                f"expected {list(loc.shape)}"
            )
        if file_stamp(loc.file) != self._stamps[loc.file]:
            raise FormatError(f"{loc.file} changed since it was opened; open it again")
        if loc.held is not None:  # kept in the protobuf: held until finish rewrites it
            raw = np.ascontiguousarray(from_analysis(values.reshape(-1), loc.dtype))
            self._locs[name] = replace(loc, held=raw.astype(loc.held.dtype, copy=False))
            self._written.add(name)
            return
        flat = np.ascontiguousarray(values).reshape(-1)
        written = 0
        with open(loc.file, "r+b") as fh:  # converted a step at a time: no second full copy
            fh.seek(loc.begin)
            for i in range(0, flat.size, _STEP):
                raw = np.ascontiguousarray(from_analysis(flat[i : i + _STEP], loc.dtype))
                written += fh.write(memoryview(raw).cast("B"))
        if written != loc.end - loc.begin:
            raise FormatError(f"internal size mismatch writing {brief(name)}")
        self._stamps[loc.file] = file_stamp(loc.file)
        self._written.add(name)

    def finish(self) -> None:
        """Complete the writes (call once, after the last :meth:`write`): what a format keeps
        about its tensors' bytes is brought up to date (a torch archive's CRC-32s); nothing for
        safetensors. The file-changed check comes first, as for each write."""
        if self._finisher is None or not self._written:
            return
        for file, stamp in self._stamps.items():
            if file_stamp(file) != stamp:
                raise FormatError(f"{file} changed since it was opened; open it again")
        self._finisher({n: self._locs[n] for n in self._written})
        self._written.clear()
        for file in self._stamps:
            self._stamps[file] = file_stamp(file)


def _open(file: Path, mode: str, buffering: int = -1):
    """``open``, with a file gone or unreadable since the source was opened as a FormatError."""
    try:
        return open(file, mode, buffering=buffering)  # noqa: SIM115 - the caller's with closes it
    except OSError as exc:
        raise FormatError(f"cannot read {file}: {exc.strerror or exc}") from exc


def _read_into(fh, offset: int, out: np.ndarray, name: str, file: Path) -> None:
    """Fill ``out`` with the bytes at ``offset`` of the open file ``fh`` (raise on a short read)."""
    fh.seek(offset)
    view, got = memoryview(out).cast("B"), 0
    while got < len(view):
        n = fh.readinto(view[got:])
        if not n:
            raise FormatError(f"short read of tensor {brief(name)} in {file}")
        got += n


def _safetensors_locs(
    file: Path, limits: Limits, only: set[str] | None = None
) -> tuple[dict[str, _Loc], dict[str, TensorInfo], list[str]]:
    from assay.watermark.formats._safetensors import read_header

    entries, _ = read_header(file, limits)
    locs: dict[str, _Loc] = {}
    other: dict[str, TensorInfo] = {}
    for e in entries:
        if e.dtype in FLOAT_DTYPES:
            locs[e.name] = _Loc(file, e.dtype, e.shape, e.begin, e.end)
        else:
            other[e.name] = TensorInfo(e.dtype, e.shape)
    return locs, other, [e.name for e in entries]


def _sharded(index_path: Path, limits: Limits, writable: bool) -> TensorSource:
    from assay.watermark.formats._index import read_index

    index = read_index(index_path, limits)
    locs: dict[str, _Loc] = {}
    other: dict[str, TensorInfo] = {}
    total = 0
    for shard in index.shards:
        file = index_path.parent / shard
        total += file.stat().st_size
        if total > limits.max_file_bytes:
            raise FormatError(
                f"{index_path.parent}: shards hold over {limits.max_file_bytes} bytes (the limit)"
            )
        shard_locs, shard_other, names = _safetensors_locs(file, limits)
        for name in names:
            if index.weight_map.get(name) != shard:
                raise FormatError(
                    f"tensor {brief(name)} in shard {brief(shard)} is not mapped to it by "
                    f"{index_path.name}"
                )
        locs.update(shard_locs)
        other.update(shard_other)
        if len(locs) + len(other) > limits.max_tensors:
            raise FormatError(
                f"{index_path.parent} holds over {limits.max_tensors} tensors (the limit)"
            )
    missing = [n for n in index.weight_map if n not in locs and n not in other]
    if missing:
        raise FormatError(
            f"{index_path.name} maps {brief(missing[0])} to {brief(index.weight_map[missing[0]])}, "
            "which does not hold it"
        )
    ordered = {n: locs[n] for n in index.weight_map if n in locs}
    return TensorSource(index_path.parent, "safetensors-sharded", ordered, None, other,
                        writable=writable)  # fmt: skip


def _torch_source(path: Path, limits: Limits, writable: bool = False) -> TensorSource | None:
    """A torch zip archive streamed from its stored records; None when some weight is compressed
    or not contiguous, or, for ``writable``, when two weights share bytes (tied weights: see
    ``_torch.overlapping``): then the eager reader holds the weights and ``save_weights`` writes
    them. Written in place, each patched record gets its CRC-32 recomputed by ``finish`` (in the
    local header or data descriptor and in the central directory: ``torch.load`` checks it)."""
    from assay.watermark.formats import _torch
    from assay.watermark.formats._zip import refresh_crc

    found = _torch.locate(path, limits)
    ranges = _torch.streamable(found)
    if ranges is None:
        return None
    if not ranges:
        raise FormatError(f"no floating-point weights in {path}")
    if writable and _torch.overlapping(ranges) is not None:
        return None
    locs = {}
    for name, (begin, end) in ranges.items():
        ref = found.slots[name].ref
        locs[name] = _Loc(path, ref.dtype, tuple(ref.shape), begin, end)
    fmt = "torchscript" if found.script else "torch"

    def fix_crcs(names: dict[str, _Loc]) -> None:
        records = sorted({found.slots[n].record for n in names})
        with open(path, "r+b") as fh:
            for record in records:
                refresh_crc(fh, found.index.records[record])

    return TensorSource(path, fmt, locs, None, _torch.other_tensors(found), writable=writable,
                        finisher=fix_crcs, stamps={path: found.stamp})  # fmt: skip


def _onnx_source(path: Path, limits: Limits, writable: bool = False) -> TensorSource:
    """An ONNX model after every check of the eager reader (``_onnx.locate``): tensors in external
    data streamed from their files, the ones inside the protobuf held. A model without external
    float data is all in the protobuf anyway: it is read eagerly.

    ``writable`` (when ``_onnx.in_place_blocker`` finds nothing against it, else the eager
    reader's source, for ``save_weights``): an external tensor is patched in its file; a held one
    is replaced in memory, and ``finish`` rewrites the protobuf atomically with those values,
    every external reference unchanged."""
    from assay.watermark.formats import _onnx

    found = _onnx.locate(path, limits)
    if not found.tensors:
        raise FormatError(f"no floating-point weights in {path}")
    if all(t.file is None for t in found.tensors) or (
        writable and _onnx.in_place_blocker(found) is not None
    ):
        return TensorSource(path, "onnx", None, _onnx.weight_file(found))
    locs = {}
    for t in found.tensors:
        if t.file is None:
            locs[t.name] = _Loc(path, t.dtype, t.shape, 0, t.nbytes, t.raw)
        else:
            locs[t.name] = _Loc(t.file, t.dtype, t.shape, t.offset, t.offset + t.nbytes)

    def rewrite(written: dict[str, _Loc]) -> None:
        held = {n: loc.held for n, loc in written.items() if loc.held is not None}
        _onnx.rewrite_inline(found, held)

    stamps = {path: found.stamp}
    return TensorSource(path, "onnx", locs, None, found.other, writable=writable,
                        finisher=rewrite, stamps=stamps)  # fmt: skip


def open_weights(
    path: str | os.PathLike[str],
    *,
    limits: Limits | None = None,
    writable: bool = False,
    probe: bool = False,
) -> TensorSource:
    """Open the model file, or the model folder (one weight file, or a shard index), at ``path``.

    ``writable`` asks for :meth:`TensorSource.write`: the source is ``in_place`` when the format
    can be patched in place (safetensors; a torch or TorchScript archive whose weights are
    contiguous runs of stored records, no two sharing bytes; an ONNX model with external data),
    else it is the eager reader's, for ``save_weights``. ``probe`` (with ``writable``) makes the
    same checks and tells ``in_place`` but refuses every write: for a file that must not change
    (the user's source, before it is copied).
    """
    source = _open_path(path, limits, writable)
    source.probe = probe
    return source


def _open_path(path: str | os.PathLike[str], limits: Limits | None, writable: bool) -> TensorSource:
    from assay.watermark.formats._api import load_weights
    from assay.watermark.formats._detect import detect_format, find_weight_files
    from assay.watermark.formats._index import find_index

    limits = limits or Limits()
    p = Path(path)
    if p.is_dir():
        index = find_index(p)
        if index is not None:
            return _sharded(index, limits, writable)
        files = find_weight_files(p)
        if len(files) != 1:
            raise FormatError(
                f"{p} holds {len(files)} weight files ({', '.join(f.name for f in files[:4])}"
                f"{', ...' if len(files) > 4 else ''}) and no safetensors index; name one"
            )
        p = files[0]
    if p.name.endswith(".safetensors.index.json"):
        return _sharded(p, limits, writable)
    if not p.exists():
        raise NotFoundError(f"{p} does not exist")
    fmt = detect_format(p)
    if fmt == "safetensors":
        locs, other, _ = _safetensors_locs(p, limits)
        if not locs:
            raise FormatError(f"no floating-point weights in {p}")
        return TensorSource(p, "safetensors", locs, None, other, writable=writable)
    if fmt in ("torch", "torchscript"):
        streamed = _torch_source(p, limits, writable)
        if streamed is not None:
            return streamed
    if fmt == "onnx":
        return _onnx_source(p, limits, writable)
    wf = load_weights(p, limits=limits)
    return TensorSource(p, wf.format, None, wf)

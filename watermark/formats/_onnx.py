"""ONNX models: initializers and Constant-node tensors, with external data confined to the model's folder.

The protobuf is parsed with ``onnx.load(..., load_external_data=False)`` and checked by
:func:`locate`, which reads no external data: every ``location`` must be a relative path that stays
inside the model's folder (no absolute paths, no ``..``, no symlink leaving it) and offset and length
must fit the file. :func:`load` then reads every tensor (the eager reader); ``_stream.open_weights``
reads each external tensor from its file only when it is accessed.

Writing back edits the tensors in a copy of the proto, keeping each one's dtype and storage field
(``raw_data`` or the typed field). A model that used external data is written with external data
again: every external tensor goes, in order, into one new file ``<out name>.data`` beside the output
(untouched tensors byte-identical); an inline model stays inline. Marking in place
(``_stream.open_weights(..., writable=True)`` on a private copy, when :func:`in_place_blocker`
allows it) instead patches external tensors in their files and, through :func:`rewrite_inline`,
rewrites only the protobuf's inline tensors, every external reference as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

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
    to_analysis,
)

_PROTOBUF_LIMIT = 2**31 - 1
_ALIGN = 64

# ONNX TensorProto.DataType -> our dtype names (others are kept but not read)
_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8_e4m3fn",
    18: "float8_e4m3fnuz",
    19: "float8_e5m2",
    20: "float8_e5m2fnuz",
}
_EXTERNAL = 1


@dataclass(frozen=True)
class _Handle:
    model: Any  # onnx.ModelProto as loaded (never mutated)
    stamp: tuple[int, int]
    external: bool


def _walk_graph(graph, path: str) -> Iterator[tuple[str, Any, str]]:
    """(default name, TensorProto, kind) for initializers and Constant values, subgraphs included."""
    for init in graph.initializer:
        yield init.name, init, "initializer"
    for node in graph.node:
        for attr in node.attribute:
            if (
                node.op_type == "Constant"
                and node.domain in ("", "ai.onnx")
                and attr.name == "value"
                and attr.HasField("t")
                and node.output
            ):
                yield node.output[0], attr.t, "constant"
            if attr.HasField("g"):
                yield from _walk_graph(attr.g, f"{path}/{node.name or node.op_type}")
            for sub in attr.graphs:
                yield from _walk_graph(sub, f"{path}/{node.name or node.op_type}")


def _named_tensors(model) -> list[tuple[str, Any]]:
    """Unique names in graph order: a repeated name gets ``#2``, ``#3``... (the lowest free).

    Linear: each base name remembers the last suffix it used, and the lowest free suffix only
    ever grows, so the names are the same as a search from ``#2`` each time would give.
    """
    seen: set[str] = set()
    last: dict[str, int] = {}
    out: list[tuple[str, Any]] = []
    for name, tp, _kind in _walk_graph(model.graph, ""):
        unique = name
        if name in seen:
            n = last.get(name, 1)
            while True:
                n += 1
                unique = f"{name}#{n}"
                if unique not in seen:
                    break
            last[name] = n
        seen.add(unique)
        out.append((unique, tp))
    return out


def _all_protos(model, max_nodes: int | None = None, where: object = "model") -> Iterator[Any]:
    """Every TensorProto anywhere in the model, for external-data checks and rewriting.

    With ``max_nodes``, FormatError as soon as the graphs (subgraphs included) hold more nodes,
    before walking them.
    """
    nodes_seen = 0

    def count(n: int) -> None:
        nonlocal nodes_seen
        nodes_seen += n
        if max_nodes is not None and nodes_seen > max_nodes:
            raise FormatError(f"{where}: its graphs hold over {max_nodes} nodes")

    def graph_protos(graph) -> Iterator[Any]:
        count(len(graph.node))
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        yield from nodes_protos(graph.node)

    def nodes_protos(nodes) -> Iterator[Any]:
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices
                if attr.HasField("g"):
                    yield from graph_protos(attr.g)
                for sub in attr.graphs:
                    yield from graph_protos(sub)

    yield from graph_protos(model.graph)
    for fn in model.functions:
        count(len(fn.node))
        yield from nodes_protos(fn.node)


def _external_entries(tp, path: Path) -> dict[str, str]:
    entries = {e.key: e.value for e in tp.external_data}
    if "location" not in entries:
        raise FormatError(f"{path}: external tensor {tp.name!r} has no location")
    return entries


def resolve_location(location: str, folder: Path, path: Path, name: str) -> Path:
    """The file an external-data location names, if it stays inside ``folder``."""
    norm = location.replace("\\", "/")
    pure = PurePosixPath(norm)
    if (
        not location
        or "\x00" in location
        or pure.is_absolute()
        or re.match(r"^[A-Za-z]:", norm)
        or ".." in pure.parts
    ):
        raise UnsafeInputError(
            f"refusing to load {path}: tensor {name!r} has external data at {location!r}, "
            "outside the model's folder"
        )
    base = folder.resolve()
    target = (folder / pure).resolve()
    if not target.is_relative_to(base):
        raise UnsafeInputError(
            f"refusing to load {path}: external data {location!r} of tensor {name!r} "
            "resolves outside the model's folder"
        )
    if not target.is_file():
        raise FormatError(f"{path}: external data file {location!r} of {name!r} is missing")
    return target


def _external_span(tp, path: Path, nbytes: int) -> tuple[Path, int]:
    entries = _external_entries(tp, path)
    target = resolve_location(entries["location"], path.parent, path, tp.name)
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries.get("length", str(nbytes)))
    except ValueError as exc:
        raise FormatError(
            f"{path}: external tensor {tp.name!r} has a bad offset or length"
        ) from exc
    if offset < 0 or length != nbytes:
        raise FormatError(
            f"{path}: external tensor {tp.name!r} claims {length} bytes at {offset}, "
            f"expected {nbytes}"
        )
    if offset + length > target.stat().st_size:
        raise FormatError(f"{path}: external data of {tp.name!r} reaches past the end of its file")
    return target, offset


def _read_span(target: Path, offset: int, nbytes: int) -> bytearray:
    buf = bytearray(nbytes)
    with open(target, "rb") as fh:
        fh.seek(offset)
        if fh.readinto(buf) != nbytes:
            raise FormatError(f"short read of external data in {target}")
    return buf


def _raw_values(tp, dtype: str, count: int, path: Path) -> np.ndarray:
    """Raw little-endian values of a non-external tensor (uint16 bits for bf16)."""
    np_dtype = np.dtype(RAW_NUMPY[dtype])
    if tp.raw_data:
        if len(tp.raw_data) != count * np_dtype.itemsize:
            raise FormatError(f"{path}: tensor {brief(tp.name)} raw_data has the wrong size")
        return np.frombuffer(tp.raw_data, dtype=np_dtype).copy()
    if dtype == "float32":
        field, as_type = tp.float_data, np.float32
    elif dtype == "float64":
        field, as_type = tp.double_data, np.float64
    elif dtype in ("float16", "bfloat16"):
        field, as_type = tp.int32_data, np.int64
    else:
        raise FormatError(f"{path}: tensor {brief(tp.name)} has no data")
    if len(field) != count:
        raise FormatError(
            f"{path}: tensor {brief(tp.name)} holds {len(field)} values, expected {count}"
        )
    values = np.asarray(field, dtype=as_type)
    if dtype in ("float16", "bfloat16"):
        values = values.astype(np.uint16)
        values = values.view(np.float16) if dtype == "float16" else values
    return values


def _load_model(path: Path, limits: Limits):
    size = check_file_size(path, limits)
    if size > _PROTOBUF_LIMIT:
        raise FormatError(
            f"{path} is {size} bytes; an ONNX protobuf cannot exceed 2 GiB "
            "(large models must keep their weights in external data)"
        )
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise FormatError(
            "reading ONNX needs the onnx package (pip install 'assay-integrity[onnx]')"
        ) from exc
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises assorted errors on bad input
        raise FormatError(f"{path} is not a valid ONNX model: {exc}") from exc
    if not model.HasField("graph"):
        raise FormatError(f"{path} is not a valid ONNX model (no graph)")
    return model


@dataclass(frozen=True)
class Located:
    """Where one floating-point tensor's values are: ``offset`` in the external file ``file``
    (``nbytes`` long), or ``raw`` (little-endian storage values, uint16 bits for bf16, flat) for a
    tensor kept in the protobuf."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: Path | None = None
    offset: int = 0
    raw: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Found:
    """An ONNX model checked by :func:`locate`: its float tensors in graph order, the others."""

    path: Path
    model: Any  # onnx.ModelProto as loaded (never mutated)
    stamp: tuple[int, int]
    external: bool  # some tensor (any dtype) keeps its data outside the protobuf
    tensors: list[Located]
    other: dict[str, TensorInfo]


def locate(path: Path, limits: Limits) -> Found:
    """Parse and check an ONNX model, reading no external data: every tensor against the limits,
    every external reference confined to the model's folder and within its file, the allocation
    budget charged for every float tensor as if it were read (``load`` reads them; the streamed
    source of ``_stream.open_weights`` reads them on access)."""
    stamp = file_stamp(path)
    model = _load_model(path, limits)
    external = False
    real_bytes = {path: path.stat().st_size}
    # validate every external reference (and bound the graph before any other walk)
    for count_all, tp in enumerate(_all_protos(model, limits.max_graph_nodes, path), 1):
        if count_all > limits.max_tensors:
            raise FormatError(f"{path} holds over {limits.max_tensors} tensors")
        if tp.data_location == _EXTERNAL:
            external = True
            dtype = _DTYPES.get(tp.data_type)
            count = check_elements(tp.name, tuple(tp.dims), limits, path)
            if dtype is None:
                resolve_location(
                    _external_entries(tp, path)["location"], path.parent, path, tp.name
                )
            else:
                target, _ = _external_span(tp, path, count * np.dtype(RAW_NUMPY[dtype]).itemsize)
                real_bytes.setdefault(target, target.stat().st_size)
    budget = Budget(limits, sum(real_bytes.values()), path)

    tensors: list[Located] = []
    other: dict[str, TensorInfo] = {}
    for name, tp in _named_tensors(model):
        dtype = _DTYPES.get(tp.data_type)
        shape = tuple(int(d) for d in tp.dims)
        if dtype not in FLOAT_DTYPES:
            other[name] = TensorInfo(dtype or f"onnx:{tp.data_type}", shape)
            continue
        if tp.segment.end or tp.segment.begin:
            raise FormatError(f"{path}: segmented tensor {brief(name)} is not supported")
        count = check_elements(name, shape, limits, path)
        nbytes = count * np.dtype(RAW_NUMPY[dtype]).itemsize
        extra = 0 if dtype in ("float32", "float64") else 4 * count
        budget.take(nbytes + extra, "tensor", name)
        if tp.data_location == _EXTERNAL:
            target, offset = _external_span(tp, path, nbytes)
            tensors.append(Located(name, dtype, shape, nbytes, target, offset))
        else:
            raw = _raw_values(tp, dtype, count, path).astype(RAW_NUMPY[dtype], copy=False)
            tensors.append(Located(name, dtype, shape, nbytes, raw=raw.reshape(-1)))
    return Found(path, model, stamp, external, tensors, other)


def load(path: Path, limits: Limits) -> WeightFile:
    return weight_file(locate(path, limits))


def weight_file(found: Found) -> WeightFile:
    """The eager reader's record of a located model: every float tensor read into memory."""
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for t in found.tensors:
        if t.file is not None:
            raw = np.frombuffer(_read_span(t.file, t.offset, t.nbytes), dtype=RAW_NUMPY[t.dtype])
        else:
            raw = t.raw
        tensors[t.name] = to_analysis(raw.reshape(t.shape), t.dtype)
        dtypes[t.name] = t.dtype
    model = found.model
    metadata = {p.key: p.value for p in model.metadata_props}
    metadata.setdefault("producer_name", model.producer_name)
    metadata.setdefault("producer_version", model.producer_version)
    return WeightFile(
        path=found.path,
        format="onnx",
        tensors=tensors,
        dtypes=dtypes,
        other=found.other,
        metadata=metadata,
        _handle=_Handle(model, found.stamp, found.external),
    )


def _set_inline(tp, raw: np.ndarray, dtype: str) -> None:
    if tp.raw_data:
        tp.raw_data = raw.tobytes()
        return
    if dtype == "float32":
        del tp.float_data[:]
        tp.float_data.extend(raw.ravel().tolist())
    elif dtype == "float64":
        del tp.double_data[:]
        tp.double_data.extend(raw.ravel().tolist())
    else:  # float16 / bfloat16 bits live in int32_data
        del tp.int32_data[:]
        tp.int32_data.extend(raw.ravel().view(np.uint16).astype(np.int64).tolist())


def _serialise(model, name: str) -> bytes:
    """The protobuf bytes of ``model``, to be written as ``name`` (within the 2 GiB limit)."""
    try:
        blob = model.SerializeToString()
    except Exception as exc:  # noqa: BLE001 - protobuf size limit and friends
        raise FormatError(f"cannot serialise {name}: {exc}") from exc
    if len(blob) > _PROTOBUF_LIMIT:
        raise FormatError(f"{name} would exceed the 2 GiB protobuf limit")
    return blob


def save(wf: WeightFile, updated, out_path) -> Path:
    import onnx

    out = check_out_path(out_path)
    raw = check_updates(wf, dict(updated))
    handle: _Handle = wf._handle
    check_unchanged(wf, handle.stamp)
    model = onnx.ModelProto()
    model.CopyFrom(handle.model)
    targets = dict(_named_tensors(model))
    for name, values in raw.items():
        tp = targets[name]
        if tp.data_location == _EXTERNAL:
            # Parked in raw_data of our private copy until _write_external moves it out.
            tp.raw_data = values.tobytes()
        else:
            _set_inline(tp, values, wf.dtypes[name])

    data_out = out.with_name(out.name + ".data") if handle.external else None
    if data_out is not None and (data_out.exists() or data_out.is_symlink()):
        raise FormatError(f"{data_out} exists; refusing to overwrite it")
    with contextlib.ExitStack() as stack:
        data_tmp = stack.enter_context(temp_sibling(out)) if data_out else None
        if data_out is not None and data_tmp is not None:
            _write_external(model, wf.path, data_tmp, data_out.name)
        blob = _serialise(model, out.name)
        tmp = stack.enter_context(temp_sibling(out))
        tmp.write_bytes(blob)
        if data_out is not None and data_tmp is not None:
            publish_new(data_tmp, data_out, error=FormatError)
        try:
            publish_new(tmp, out, error=FormatError)
        except BaseException:
            if data_out is not None:
                with contextlib.suppress(OSError):
                    os.unlink(data_out)
            raise
    return out


def in_place_blocker(found: Found) -> str | None:
    """Why ``found`` cannot be marked in place (its external data patched in its file(s), the
    protobuf rewritten only for the inline tensors marked), or None when it can: it must keep
    some float tensor in external data, no external span may be the model file itself, and no
    two external tensors (of any known dtype) may share bytes (``save`` would mark each float
    tensor from its stored values and write every tensor apart; in place the second name would
    be read already marked, or an integer tensor changed with it)."""
    if not any(t.file for t in found.tensors):
        return "no external data"
    spans = []
    for tp in _all_protos(found.model):  # every external tensor, floats or not (bounded by locate)
        dtype = _DTYPES.get(tp.data_type)
        if tp.data_location != _EXTERNAL or dtype is None:
            continue
        nbytes = int(np.prod(tuple(tp.dims), dtype=np.int64)) * np.dtype(RAW_NUMPY[dtype]).itemsize
        file, offset = _external_span(tp, found.path, nbytes)
        spans.append((file, offset, offset + nbytes, tp.name))
    spans.sort()
    if any(file == found.path.resolve() or file == found.path for file, *_ in spans):
        return "external data inside the model file"
    for (fa, _, a_end, a), (fb, b_start, _, b) in zip(spans, spans[1:], strict=False):
        if fa == fb and b_start < a_end:
            return f"tensors {brief(a)} and {brief(b)} share external bytes"
    return None


def rewrite_inline(found: Found, updates: dict[str, np.ndarray]) -> None:
    """Replace ``found.path`` atomically with its protobuf, the inline tensors in ``updates``
    (name -> stored values, flat) set in their own storage field, every other tensor and every
    external reference unchanged (the external data, patched in place, is not touched here)."""
    import onnx

    from assay.core.atomic import publish_replace

    if not updates:
        return
    model = onnx.ModelProto()
    model.CopyFrom(found.model)
    targets = dict(_named_tensors(model))
    dtypes = {t.name: t.dtype for t in found.tensors}
    for name, raw in updates.items():
        tp = targets[name]
        if tp.data_location == _EXTERNAL:
            raise FormatError(f"internal error: {brief(name)} is not inline")
        _set_inline(tp, raw, dtypes[name])
    blob = _serialise(model, found.path.name)
    with temp_sibling(found.path) as tmp:
        tmp.write_bytes(blob)
        publish_replace(tmp, found.path)


def _write_external(model, src: Path, data_tmp: Path, location: str) -> None:
    with open(data_tmp, "wb") as fh:
        for tp in _all_protos(model):
            if tp.data_location != _EXTERNAL:
                continue
            data = bytes(tp.raw_data)
            tp.ClearField("raw_data")
            if not data:
                entries = _external_entries(tp, src)
                target = resolve_location(entries["location"], src.parent, src, tp.name)
                offset = int(entries.get("offset", "0"))
                length = int(entries["length"]) if "length" in entries else None
                if length is None:
                    dtype = _DTYPES.get(tp.data_type)
                    if dtype is None:
                        raise FormatError(f"{src}: external tensor {tp.name!r} has no length")
                    length = (
                        int(np.prod(tuple(tp.dims), dtype=np.int64))
                        * np.dtype(RAW_NUMPY[dtype]).itemsize
                    )
                if offset < 0 or offset + length > target.stat().st_size:
                    raise FormatError(f"{src}: external data of {tp.name!r} is out of bounds")
                data = bytes(_read_span(target, offset, length))
            pos = fh.tell()
            pad = (-pos) % _ALIGN
            if pad:
                fh.write(b"\0" * pad)
                pos += pad
            fh.write(data)
            del tp.external_data[:]
            for key, value in (
                ("location", location),
                ("offset", str(pos)),
                ("length", str(len(data))),
            ):
                entry = tp.external_data.add()
                entry.key, entry.value = key, value


def external_files(path: Path, limits: Limits) -> set[Path]:
    """The files (resolved, inside the model's folder) that ``path``'s tensors keep external data
    in, whatever their dtype; empty for a model that does not parse (reading it says why)."""
    try:
        model = _load_model(path, limits)
        found: set[Path] = set()
        for count, tp in enumerate(_all_protos(model, limits.max_graph_nodes, path), 1):
            if count > limits.max_tensors:
                break
            if tp.data_location == _EXTERNAL:
                location = _external_entries(tp, path)["location"]
                found.add(resolve_location(location, path.parent, path, tp.name))
        return found
    except (FormatError, UnsafeInputError):
        return set()

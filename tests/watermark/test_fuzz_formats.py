"""Fuzzing the weight readers: whatever the bytes, only assay's one-line errors, and nothing written.

Each reader gets random and mutated inputs built from a valid seed file: the pickle VM (opcode
sequences as well as byte mutations), torch zip archives, legacy torch files, safetensors headers
and ONNX protobufs. Every example runs under small ``Limits`` so it stays cheap in time and memory;
the normal suite runs the default hypothesis profile, ``make fuzz`` the ``fuzz`` profile.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import hostile_samples as H
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from assay.core.errors import AssayError, FormatError
from assay.watermark.formats import Limits, load_weights
from assay.watermark.formats._pickle import PickleBudget, Refused, safe_unpickle
from assay.watermark.formats._torch import flatten

LIMITS = Limits(
    max_tensors=64,
    max_tensor_elements=1 << 16,
    max_header_bytes=1 << 20,
    max_pickle_ops=20_000,
    max_pickle_memo=1_000,
    alloc_ratio=4.0,
    alloc_slack_bytes=1 << 20,
)
BUDGET = PickleBudget(max_ops=20_000, max_memo=1_000)


@contextmanager
def _folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def _load_is_safe(path: Path) -> None:
    """Load ``path``: success or one AssayError line; the folder is left as it was."""
    before = sorted(os.listdir(path.parent))
    try:
        load_weights(path, limits=LIMITS)
    except AssayError as exc:
        assert str(exc) and "\n" not in str(exc)
    assert sorted(os.listdir(path.parent)) == before


_edits = st.lists(
    st.tuples(
        st.integers(0, 1 << 30),
        st.sampled_from(["flip", "insert", "delete"]),
        st.binary(min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=6,
)


def _mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for at, kind, value in edits:
        i = at % (len(buf) + 1)
        if kind == "flip" and buf:
            buf[i % len(buf)] ^= value[0] or 1
        elif kind == "insert":
            buf[i:i] = value
        elif buf:
            del buf[i % len(buf) : i % len(buf) + len(value)]
    return bytes(buf)


def _seed_pickle() -> bytes:
    return H.state_dict_pickle(
        [
            H.tensor_entry("a", "0", numel=6, shape=(2, 3)),
            H.tensor_entry("b", "0", numel=6, shape=(3,), stride=(2,), offset=1),
            H.tensor_entry("c", "1", numel=2, shape=(2,), storage="HalfStorage"),
        ]
    )


_RECORDS = {"0": np.arange(6, dtype="<f4").tobytes(), "1": np.ones(2, "<f2").tobytes()}

# -- the pickle VM -----------------------------------------------------------------------------

_SNIPPETS = [
    b"}", b"]", b")", b"(", b"t", b"l", b"d", b"s", b"u", b"a", b"e", b"b", b"R", b"0", b"1",
    b"2", b"N", b"\x88", b"\x89", b"\x85", b"\x86", b"\x87", b"\x8f", b"\x90", b"\x91", b"\x94",
    b"Q", b"\x81", b"\x92", b"h\x00", b"h\x01", b"h\x02", b"q\x00", b"q\x01", b"q\x02",
    b"ccollections\nOrderedDict\n", b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ctorch\nFloatStorage\n", b"ctorch\nTensor\n", b"ctorch\nSize\n", b"ctorch\ndevice\n",
    b"cbuiltins\nset\n", b"cbuiltins\nfrozenset\n", b"cbuiltins\nbytearray\n",
    b"c_codecs\nencode\n", b"ctorch._tensor\n_rebuild_from_type_v2\n", b"cposix\nsystem\n",
    H.p_str("storage"), H.p_str("cpu"), H.p_str("0"), H.p_str("latin1"),
]  # fmt: skip
_opcode = st.one_of(
    st.sampled_from(_SNIPPETS),
    st.integers(-(2**70), 2**70).map(H.p_int),
    st.text(max_size=6).map(H.p_str),
    st.binary(max_size=3),
)


@given(st.lists(_opcode, max_size=60))
def test_pickle_opcode_sequences(ops: list[bytes]) -> None:
    data = b"\x80\x02" + b"".join(ops) + b"."
    try:
        obj, _ = safe_unpickle(data, script=False, max_storages=8, budget=BUDGET)
    except (FormatError, Refused):
        return
    with suppress(FormatError):
        flatten(obj, LIMITS)


@given(_edits)
def test_pickle_mutations(edits) -> None:
    with suppress(FormatError, Refused):
        safe_unpickle(_mutate(_seed_pickle(), edits), script=False, max_storages=8, budget=BUDGET)


@given(st.binary(max_size=400))
def test_pickle_random_bytes(data: bytes) -> None:
    for script in (False, True):
        with suppress(FormatError, Refused):
            safe_unpickle(b"\x80\x02" + data, script=script, max_storages=8, budget=BUDGET)


# -- whole files -------------------------------------------------------------------------------


@given(_edits, st.booleans())
def test_torch_zip_mutations(edits, mutate_pickle: bool) -> None:
    with _folder() as folder:
        path = folder / "m.pt"
        if mutate_pickle:
            H.torch_zip(path, _mutate(_seed_pickle(), edits), _RECORDS)
        else:
            H.torch_zip(folder / "seed.pt", _seed_pickle(), _RECORDS, deflate=True)
            path.write_bytes(_mutate((folder / "seed.pt").read_bytes(), edits))
            (folder / "seed.pt").unlink()
        _load_is_safe(path)


@given(_edits)
def test_legacy_torch_mutations(edits) -> None:
    with _folder() as folder:
        H.legacy_torch(
            folder / "seed.pt", _seed_pickle(), [("0", 6, _RECORDS["0"]), ("1", 2, _RECORDS["1"])]
        )
        path = folder / "m.pt"
        path.write_bytes(_mutate((folder / "seed.pt").read_bytes(), edits))
        (folder / "seed.pt").unlink()
        _load_is_safe(path)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_entry = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F7"])
        | _json_values,
        "shape": st.lists(st.integers(-2, 2**40), max_size=4) | _json_values,
        "data_offsets": st.lists(st.integers(-2, 2**40), max_size=3) | _json_values,
    },
)


@given(
    st.dictionaries(st.text(max_size=6), _entry | _json_values, max_size=5), st.binary(max_size=64)
)
def test_safetensors_headers(header: dict, data: bytes) -> None:
    with _folder() as folder:
        raw = json.dumps(header).encode()
        path = folder / "m.safetensors"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
        _load_is_safe(path)


@given(_edits)
def test_safetensors_mutations(edits) -> None:
    header = {
        "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]},
        "__metadata__": {"format": "pt"},
    }
    raw = json.dumps(header).encode()
    with _folder() as folder:
        path = folder / "m.safetensors"
        path.write_bytes(_mutate(struct.pack("<Q", len(raw)) + raw + b"\0" * 20, edits))
        _load_is_safe(path)


def _seed_onnx() -> bytes:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 2.0, 3.0, 4.0])
    h = helper.make_tensor(
        "h", TensorProto.FLOAT16, [2], np.ones(2, np.float16).tobytes(), raw=True
    )
    node = helper.make_node(
        "Constant", [], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [5.0])
    )
    add = helper.make_node("Add", ["w", "c"], ["y"])
    graph = helper.make_graph(
        [node, add],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [w, h],
    )
    return helper.make_model(graph).SerializeToString()


@given(_edits)
def test_onnx_protobuf_mutations(edits) -> None:
    seed = _seed_onnx()
    with _folder() as folder:
        path = folder / "m.onnx"
        path.write_bytes(_mutate(seed, edits))
        _load_is_safe(path)


@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=70),
    st.integers(0, 30),
    st.binary(max_size=32),
    st.lists(st.floats(width=32), max_size=8),
)
def test_onnx_tensor_fields(dims, data_type, raw, floats) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    t = onnx.TensorProto(name="w", data_type=data_type, dims=dims)
    if raw:
        t.raw_data = raw
    t.float_data.extend(floats)
    graph = helper.make_graph([], "g", [], [], initializer=[t])
    with _folder() as folder:
        path = folder / "m.onnx"
        path.write_bytes(helper.make_model(graph).SerializeToString())
        _load_is_safe(path)


@st.composite
def _torch_states(draw):
    """A small state dict: float tensors of random dtype and shape, some views at a storage
    offset (contiguous: streamed), some transposed (strided: read eagerly)."""
    n = draw(st.integers(1, 4))
    out = []
    for i in range(n):
        rows, cols = draw(st.integers(1, 9)), draw(st.integers(1, 9))
        out.append((f"t{i}", draw(st.sampled_from(["float32", "bfloat16", "float16", "float64"])),
                    rows, cols, draw(st.sampled_from(["plain", "offset", "transposed"]))))  # fmt: skip
    return out


@settings(deadline=None)  # the first example imports torch
@given(_torch_states(), st.integers(0, 2**31))
def test_streamed_torch_zip_equals_the_eager_reader(spec, seed: int) -> None:
    """``open_weights`` of a torch zip reads what ``load_weights`` reads, tensor for tensor, and
    streams exactly when every weight is a contiguous run of its stored record."""
    torch = pytest.importorskip("torch")
    from assay.watermark.formats._stream import open_weights

    g = torch.Generator().manual_seed(seed)
    state, strided = {}, False
    for name, dtype, rows, cols, kind in spec:
        base = torch.randn(rows + 2, cols, generator=g).to(getattr(torch, dtype))
        if kind == "offset":
            state[name] = base[2:]
        elif kind == "transposed":
            state[name] = base.t()
            strided = strided or (rows + 2 > 1 and cols > 1)
        else:
            state[name] = base
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pt"
        torch.save(state, str(path))
        eager, src = load_weights(path), open_weights(path)
        assert src.streamed == (not strided)
        assert list(src) == list(eager.tensors)
        for name, arr in eager.tensors.items():
            got = src[name]
            assert got.dtype == arr.dtype and np.array_equal(got, arr, equal_nan=True)


_LOCATIONS = [
    "w.bin", "./w.bin", "sub/v.bin", "sub\\v.bin", "sub/../w.bin", "../outside.bin", "out.bin",
    "/etc/hostname", "C:/w.bin", "missing.bin", "d", "", "w.bin\x00x", "model.onnx",
]  # fmt: skip
_NUMBER = st.one_of(
    st.none(),
    st.integers(-8, 120).map(str),
    st.sampled_from(["x", "", " 4", "0x10", "1e3", "99999999999999999999", "-0"]),
)


_FITTING = ["w.bin", "./w.bin", "sub/v.bin", "sub\\v.bin", "sub/../w.bin"]


@st.composite
def _external_tensors(draw):
    """1-3 tensors, initializers or Constant values, each inline (raw_data) or in external data.
    Most fit (a location in the folder, the length the shape needs, inline bytes of the right
    size), the rest get a random location, offset and length (any of them may be missing) or
    random inline bytes."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        fit = draw(st.integers(0, 3)) > 0
        if draw(st.booleans()):
            external = None
        elif fit:
            external = (draw(st.sampled_from(_FITTING)), str(draw(st.integers(0, 64))), "fit")
        else:
            external = (draw(st.sampled_from([*_LOCATIONS, None])), draw(_NUMBER), draw(_NUMBER))
        out.append(
            (
                draw(st.sampled_from(["a", "b", "a#2"])),
                draw(st.sampled_from([1, 1, 10, 16, 11, 7, 0, 99] if fit else [1, 10, 16, 2, 99])),
                draw(st.lists(st.integers(0, 6 if fit else 9), max_size=3)),
                draw(st.sampled_from(["initializer", "constant"])),
                external,
                draw(st.binary(max_size=64)),
                fit,
            )
        )
    return out


def _external_model(folder: Path, spec) -> Path:
    from onnx import TensorProto, helper

    from assay.watermark.formats._common import RAW_NUMPY
    from assay.watermark.formats._onnx import _DTYPES

    inits, nodes = [], []
    for i, (name, dtype, dims, kind, external, raw, fit) in enumerate(spec):
        t = TensorProto(name=name, data_type=dtype, dims=dims)
        size = int(np.prod(dims)) * np.dtype(RAW_NUMPY.get(_DTYPES.get(dtype, ""), "u1")).itemsize
        if external is None:
            t.raw_data = (raw * size)[:size].ljust(size, b"\1") if fit else raw
        else:
            t.data_location = TensorProto.EXTERNAL
            location, offset, length = external
            length = str(size) if length == "fit" else length
            for key, value in (("location", location), ("offset", offset), ("length", length)):
                if value is not None:
                    e = t.external_data.add()
                    e.key, e.value = key, value
        if kind == "constant":
            nodes.append(helper.make_node("Constant", [], [name], value=t, name=f"n{i}"))
        else:
            inits.append(t)
    graph = helper.make_graph(nodes, "g", [], [], initializer=inits)
    path = folder / "model.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


@settings(deadline=None)
@given(
    _external_tensors(),
    st.binary(min_size=16, max_size=96),
    st.binary(min_size=16, max_size=96),
    st.integers(0, 96),
    st.integers(0, 96),
)
def test_streamed_onnx_external_data_equals_the_eager_reader(
    spec, w_bytes: bytes, v_bytes: bytes, w_cut: int, v_cut: int
) -> None:
    """Whatever the external-data entries, ``open_weights`` refuses what ``load_weights`` refuses
    (same error class, one line: FormatError, UnsafeInputError or NotFoundError), reads what it
    reads otherwise, streams only ranges inside files inside the model's folder, and a file cut
    short after opening gives FormatError on access, nothing else."""
    pytest.importorskip("onnx")
    from assay.core.errors import NotFoundError, UnsafeInputError
    from assay.watermark.formats._stream import open_weights

    allowed = (FormatError, UnsafeInputError, NotFoundError)
    with _folder() as root:
        (root / "outside.bin").write_bytes(b"\1" * 64)
        folder = root / "m"
        (folder / "sub").mkdir(parents=True)
        (folder / "d").mkdir()
        (folder / "w.bin").write_bytes(w_bytes)
        (folder / "sub" / "v.bin").write_bytes(v_bytes)
        (folder / "out.bin").symlink_to(root / "outside.bin")
        path = _external_model(folder, spec)
        outcome = []
        for reader in (load_weights, open_weights):
            try:
                outcome.append(reader(path, limits=LIMITS))
            except allowed as exc:
                assert str(exc) and "\n" not in str(exc)
                outcome.append(type(exc))
        eager, src = outcome
        if isinstance(eager, type):
            assert src is eager  # the same refusal
            event(f"refused: {eager.__name__}")
            return
        assert not isinstance(src, type), src
        event(f"read, streamed={src.streamed}")
        assert list(src) == list(eager.tensors) and src.dtypes == eager.dtypes
        assert src.other == eager.other
        for name, arr in eager.tensors.items():
            got = src[name]
            assert got.dtype == arr.dtype and np.array_equal(got, arr, equal_nan=True)
            blocks = list(src.blocks(name, 3)) or [np.empty(0, arr.dtype)]
            assert np.array_equal(np.concatenate(blocks), arr.reshape(-1), equal_nan=True)
        base = folder.resolve()
        for loc in src._locs.values():  # every streamed range: a file in the folder, in bounds
            if loc.held is None:
                assert loc.file.resolve().is_relative_to(base) and loc.file.resolve().is_file()
                assert 0 <= loc.begin <= loc.end <= loc.file.stat().st_size
        (folder / "w.bin").write_bytes(w_bytes[:w_cut])
        (folder / "sub" / "v.bin").write_bytes(v_bytes[:v_cut])
        for name in src:
            for read in (lambda n: src[n], lambda n: src.sample(n, np.zeros(1, np.int64))):
                try:
                    read(name)
                except FormatError as exc:
                    assert str(exc) and "\n" not in str(exc)

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
from hypothesis import given, settings
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

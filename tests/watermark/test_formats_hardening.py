"""The readers' work and memory limits, the legacy torch format and the safetensors layout rules.

Property tests (hypothesis) pin down each parser change: the ONNX de-duplication gives the names the
old quadratic search gave, the safetensors layout check accepts exactly what the ``safetensors``
library accepts, and the bounded JSON reader round-trips every ordinary document.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import hostile_samples as H
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from assay.core.errors import FormatError, UnsafeInputError
from assay.core.safe_json import loads_untrusted
from assay.watermark.formats import Limits, detect_format, load_weights, save_weights
from assay.watermark.formats._pickle import PickleBudget, safe_unpickle


def _two_tensor_zip(path: Path, *, deflate: bool = False) -> Path:
    entries = [
        H.tensor_entry("a", "0", numel=6, shape=(2, 3)),
        H.tensor_entry("b", "1", numel=4, shape=(4,), storage="HalfStorage"),
    ]
    records = {
        "0": np.arange(6, dtype="<f4").tobytes(),
        "1": np.array([1, 2, 3, 4], dtype="<f2").tobytes(),
    }
    return H.torch_zip(path, H.state_dict_pickle(entries), records, deflate=deflate)


# -- the unpickler -----------------------------------------------------------------------------


def test_handwritten_archive_loads(tmp_path: Path) -> None:
    wf = load_weights(_two_tensor_zip(tmp_path / "m.pt"))
    np.testing.assert_array_equal(wf.tensors["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(wf.tensors["b"], np.array([1, 2, 3, 4], np.float32))
    assert wf.dtypes == {"a": "float32", "b": "float16"}


def test_deflated_records_are_read_and_crc_checked(tmp_path: Path) -> None:
    path = _two_tensor_zip(tmp_path / "deflated.pt", deflate=True)
    np.testing.assert_array_equal(load_weights(path).tensors["a"].ravel(), np.arange(6))
    # Flip one byte of the deflated stream of record 0 (found by its local header).
    data = bytearray(path.read_bytes())
    at = data.find(b"archive/data/0") + len(b"archive/data/0")
    data[at + 2] ^= 0x01
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="CRC|inflate|wrong size"):
        load_weights(bad)


def test_d7_poisoned_file_does_not_change_later_loads(tmp_path: Path) -> None:
    good = _two_tensor_zip(tmp_path / "good.pt")
    poisons = {
        "storage": b"ctorch\nFloatStorage\n}" + H.p_str("dtype") + H.p_str("int64") + b"sb0",
        "function": b"ctorch._utils\n_rebuild_tensor_v2\n}" + H.p_str("x") + b"Nsb0",
        "marker": b"ctorch\nTensor\n}" + H.p_str("name") + H.p_str("evil") + b"sb0",
        "slots": b"ctorch\nFloatStorage\nN}" + H.p_str("dtype") + H.p_str("int64") + b"s\x86b0",
    }
    for what, poison in poisons.items():
        pkl = H.state_dict_pickle([H.tensor_entry("w", "0", numel=4, shape=(4,))])
        evil = H.torch_zip(tmp_path / f"{what}.pt", pkl[:2] + poison + pkl[2:], {"0": b"\0" * 16})
        with pytest.raises(FormatError, match="sets the state"):
            load_weights(evil)
        wf = load_weights(good)  # the same process reads the next file exactly as before
        assert wf.dtypes == {"a": "float32", "b": "float16"}


def test_build_sets_state_only_on_objects_the_load_created(tmp_path: Path) -> None:
    # torch's own state dicts BUILD their OrderedDict with {'_metadata': ...}: still read.
    import pickle
    from collections import OrderedDict

    od = OrderedDict(a=1)
    od._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    obj, _ = safe_unpickle(pickle.dumps(od, protocol=2), script=False, max_storages=10)
    assert obj == {"a": 1} and obj._metadata == {"": {"version": 1}}


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (PickleBudget(max_ops=30), "steps of work"),
        (PickleBudget(max_memo=3), "memo holds more than 3"),
    ],
)
def test_pickle_budget_limits(budget: PickleBudget, message: str) -> None:
    import pickle

    data = pickle.dumps([[i] for i in range(10)], protocol=2)  # ten BINPUTs
    safe_unpickle(data, script=False, max_storages=10)  # fits the default budget
    with pytest.raises(FormatError, match=message):
        safe_unpickle(data, script=False, max_storages=10, budget=budget)


def test_pickle_integers_and_created_bytes_are_bounded() -> None:
    big = b"\x80\x02\x8a\x40" + b"\x01" * 64 + b"."
    with pytest.raises(FormatError, match="integer of 64 bytes"):
        safe_unpickle(big, script=False, max_storages=1)
    # One 1000-byte string encoded 2000 times through the memo: 2 MB from a 40 kB pickle.
    text = H.p_str("x" * 1000) + H.p_put(0) + b"0"
    encode = b"c_codecs\nencode\n" + H.p_put(1) + b"0"
    calls = b"".join(H.p_get(1) + H.p_get(0) + H.p_str("latin1") + b"\x86Ra" for _ in range(2000))
    with pytest.raises(FormatError, match="creates more bytes"):
        safe_unpickle(
            b"\x80\x02" + text + encode + b"]" + calls + b".", script=False, max_storages=1
        )


def test_limits_override_the_allocation_budget(tmp_path: Path) -> None:
    path = _two_tensor_zip(tmp_path / "m.pt")
    load_weights(path)
    with pytest.raises(FormatError, match="budget"):
        load_weights(path, limits=Limits(alloc_ratio=0.0, alloc_slack_bytes=8))


# -- legacy torch.save files -------------------------------------------------------------------


def test_legacy_file_round_trips_through_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    sd = torch.nn.Linear(4, 3).state_dict()
    sd["half"] = torch.randn(5).half()
    sd["bf16"] = torch.randn(2, 2).bfloat16()
    sd["tied"] = sd["weight"]
    sd["view"] = sd["weight"][1:]
    sd["steps"] = torch.arange(3)
    src = tmp_path / "legacy.pt"
    torch.save(sd, src, _use_new_zipfile_serialization=False)
    assert detect_format(src) == "torch-legacy"
    wf = load_weights(src)
    assert wf.format == "torch-legacy" and set(wf.other) == {"steps"}
    for name in ("weight", "bias", "half", "bf16", "view"):
        np.testing.assert_array_equal(wf.tensors[name], sd[name].float().numpy())
    updated = {k: v + 1 for k, v in wf.tensors.items() if k not in ("tied", "view")}
    updated["tied"] = updated["weight"]
    updated["view"] = updated["weight"][1:]
    out = save_weights(wf, updated, tmp_path / "out.pt")
    back = torch.load(out, weights_only=True)
    assert back["steps"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(back["weight"].numpy(), sd["weight"].numpy() + 1, rtol=1e-6)
    np.testing.assert_allclose(back["half"].float().numpy(), updated["half"], rtol=1e-3)
    assert back["tied"].data_ptr() == back["weight"].data_ptr()  # still one storage


def test_legacy_layout_is_checked(tmp_path: Path) -> None:
    entry = H.tensor_entry("w", "0", numel=4, shape=(4,))
    pkl = H.state_dict_pickle([entry])
    H.legacy_torch(tmp_path / "ok.pt", pkl, [("0", 4, b"\0" * 16)])
    assert load_weights(tmp_path / "ok.pt").tensors["w"].shape == (4,)
    cases = {
        "trailing": ([("0", 4, b"\0" * 16 + b"extra")], "trailing bytes"),
        "count": ([("0", 5, b"\0" * 20)], "holds 5 elements"),
        "keys": ([("0", 4, b"\0" * 16), ("1", 1, b"\0" * 4)], "key list"),
    }
    for name, (storages, message) in cases.items():
        path = H.legacy_torch(tmp_path / f"{name}.pt", pkl, storages)
        with pytest.raises(FormatError, match=message):
            load_weights(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(b"\x80\x02" + H.p_int(MAGIC_MINUS_ONE) + b".")
    with pytest.raises(UnsafeInputError, match="raw pickle"):
        load_weights(raw)


MAGIC_MINUS_ONE = H.MAGIC - 1


# -- ONNX name de-duplication (D5) -------------------------------------------------------------


def _quadratic_names(names: list[str]) -> list[str]:
    """The original algorithm, kept here as the specification."""
    seen: set[str] = set()
    out = []
    for name in names:
        unique, n = name, 1
        while unique in seen:
            n += 1
            unique = f"{name}#{n}"
        seen.add(unique)
        out.append(unique)
    return out


class _FakeGraph:
    def __init__(self, names: list[str]) -> None:
        self.initializer = [type("T", (), {"name": n})() for n in names]
        self.node: list = []


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["w", "b", "w#2", "w#3", "b#2", "w#2#2", ""]),
            st.text(alphabet="wb#23", max_size=4),
        ),
        max_size=60,
    )
)
def test_onnx_dedup_matches_the_quadratic_search(names: list[str]) -> None:
    from assay.watermark.formats._onnx import _named_tensors

    model = type("M", (), {"graph": _FakeGraph(names)})()
    assert [n for n, _ in _named_tensors(model)] == _quadratic_names(names)


# -- safetensors layout (D12) ------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3)),  # (elements, gap before)
        min_size=1,
        max_size=5,
    ),
    st.integers(0, 3),  # trailing bytes
    st.booleans(),  # overlap the last two
)
def test_safetensors_layout_accepted_as_the_library_does(layout, trailing, overlap) -> None:
    import tempfile

    from safetensors.numpy import load_file

    from assay.watermark.formats._safetensors import read_header

    header, pos = {}, 0
    for i, (n, gap) in enumerate(layout):
        pos += gap * 4
        header[f"t{i}"] = {"dtype": "F32", "shape": [n], "data_offsets": [pos, pos + 4 * n]}
        pos += 4 * n
    if overlap and len(layout) > 1:
        last = header[f"t{len(layout) - 1}"]
        a, b = last["data_offsets"]
        last["data_offsets"] = [max(0, a - 4), max(0, b - 4)]
        pos = max(pos - 4, max(e["data_offsets"][1] for e in header.values()))
    raw = json.dumps(header).encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (pos + trailing))
        try:
            load_file(str(path))
            library_ok = True
        except Exception:  # noqa: BLE001 - any refusal by the library
            library_ok = False
        try:
            read_header(path, Limits())
            ours_ok = True
        except FormatError:
            ours_ok = False
    assert ours_ok == library_ok, (header, trailing)


def test_safetensors_written_by_the_library_with_padding_load(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"x": np.ones(3, np.float32), "y": np.zeros((2, 2), np.float16)}, str(tmp_path / "m"))
    wf = load_weights(tmp_path / "m")
    assert set(wf.tensors) == {"x", "y"}


# -- the bounded JSON reader -------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(_json)
def test_bounded_json_round_trips_ordinary_documents(value) -> None:
    assert loads_untrusted(json.dumps(value), what="doc", error=FormatError) == value


@given(st.integers(65, 400), st.sampled_from("[{"))
def test_bounded_json_refuses_deep_nesting(depth: int, opener: str) -> None:
    text = (opener + ('"k":' if opener == "{" else "")) * depth + "1" + "]}"[opener == "{"] * depth
    with pytest.raises(FormatError, match="nests deeper"):
        loads_untrusted(text, what="doc", error=FormatError)


def test_hostile_safetensors_index_beside_shards_is_ignored(tmp_path: Path) -> None:
    import os

    from safetensors.numpy import save_file

    from assay.watermark.formats import find_weight_files

    save_file({"x": np.ones(2, np.float32)}, str(tmp_path / "adapter.safetensors"))
    (tmp_path / "pytorch_model-00001-of-00002.bin").write_bytes(b"\0")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text("[" * 100_000 + "]" * 100_000)  # nested past any parser's recursion limit
    names = [p.name for p in find_weight_files(tmp_path)]
    assert "pytorch_model-00001-of-00002.bin" in names  # not a twin: the index is unreadable
    index.unlink()
    os.mkfifo(index)  # a FIFO is never opened
    assert "pytorch_model-00001-of-00002.bin" in [p.name for p in find_weight_files(tmp_path)]


def test_opcodes_that_preallocate_or_import_are_refused() -> None:
    for body in (
        b"\x96" + struct.pack("<Q", 10**12),  # BYTEARRAY8: bytearray(claimed size) up front
        b"\x82\x01",  # EXT1: the copyreg extension registry
        b"(i__main__\nX\n",  # INST
    ):
        with pytest.raises(FormatError, match="opcode"):
            safe_unpickle(b"\x80\x05" + body + b".", script=False, max_storages=1)

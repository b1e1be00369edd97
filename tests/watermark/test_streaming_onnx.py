"""Streaming ONNX external data: ``open_weights`` reads what ``load_weights`` reads, tensor for
tensor, without reading external data before it is accessed, and refuses every hostile reference
the eager reader refuses, with the same error."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from assay.core.errors import FormatError, UnsafeInputError  # noqa: E402
from assay.watermark.formats import Limits, load_weights  # noqa: E402
from assay.watermark.formats._common import f32_to_bf16_bits  # noqa: E402
from assay.watermark.formats._stream import open_weights  # noqa: E402


def _bf16(name: str, values: np.ndarray) -> TensorProto:
    bits = f32_to_bf16_bits(values.astype(np.float32))
    return helper.make_tensor(
        name, TensorProto.BFLOAT16, list(values.shape), bits.tobytes(), raw=True
    )


def _graph(seed: int = 0) -> onnx.ModelProto:
    """Every kind of float tensor: fp32/fp16/bf16/fp64 in raw_data (external when large), small
    ones inline (raw_data, float_data, fp16 and bf16 bits in int32_data), a repeated name, a
    Constant node's tensor, and an int64 tensor (not analysed)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.02, (300, 64)).astype(np.float32), "wte"),
        numpy_helper.from_array(rng.normal(0, 1, (64, 48)).astype(np.float16), "h0.attn"),
        _bf16("h0.proj", rng.normal(0, 1, (64, 40))),
        numpy_helper.from_array(rng.normal(0, 1, (40, 10)), "head"),  # float64
        numpy_helper.from_array(np.arange(3, dtype=np.float32), "bias"),  # raw_data, small
        helper.make_tensor("ln", TensorProto.FLOAT, [8], rng.normal(0, 1, 8).tolist()),
        helper.make_tensor("ln16", TensorProto.FLOAT16, [4], np.float16([1, -2, 0.5, 3])),
        helper.make_tensor("lnbf", TensorProto.BFLOAT16, [3], [1.0, -0.25, 7.0]),
        numpy_helper.from_array(rng.normal(0, 1, (64, 64)).astype(np.float32), "wte"),  # wte#2
        numpy_helper.from_array(np.arange(100, dtype=np.int64), "steps"),
    ]
    const = helper.make_node(
        "Constant",
        [],
        ["c"],
        value=numpy_helper.from_array(rng.normal(0, 1, (32, 32)).astype(np.float32), "cv"),
    )
    graph = helper.make_graph(
        [const, helper.make_node("Identity", ["c"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 32])],
        initializer=inits,
    )
    return helper.make_model(graph)


def _save(folder: Path, *, one_file: bool = True, model=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(
        model if model is not None else _graph(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=one_file,
        location="weights.bin",
        size_threshold=64,
        convert_attribute=True,
    )
    return path


def _external_names(path: Path) -> set[str]:
    from assay.watermark.formats import _onnx

    return {t.name for t in _onnx.locate(path, Limits()).tensors if t.file is not None}


@pytest.mark.parametrize("one_file", [True, False])
def test_streamed_onnx_reads_what_the_eager_reader_reads(
    tmp_path: Path, one_file: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.watermark.formats import _stream

    monkeypatch.setattr(_stream, "_STEP", 1000)  # whole reads of fp16/bf16 in several blocks
    path = _save(tmp_path / "m", one_file=one_file)
    external = _external_names(path)
    assert {"wte", "wte#2", "h0.attn", "h0.proj", "head", "c"} <= external
    assert not external & {"bias", "ln", "ln16", "lnbf"}  # kept in the protobuf
    eager, src = load_weights(path), open_weights(path)
    assert src.streamed and src.fresh and src.format == "onnx" and src.weight_file is None
    assert list(src) == list(eager.tensors) and src.dtypes == eager.dtypes
    assert src.other == eager.other and set(src.other) == {"steps"}
    assert src.dtypes["head"] == "float64" and src.dtypes["h0.proj"] == "bfloat16"
    assert path in src.files and (path.parent / "weights.bin" in src.files) == one_file
    for name, arr in eager.tensors.items():
        got = src[name]
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)
        got[...] = 0  # each access is a new array
        assert np.array_equal(src[name], arr)
        raw = arr.size * {"float64": 8, "float32": 4}.get(src.dtypes[name], 2)
        assert src.nbytes(name) == raw
        for step in (7, 1000, max(arr.size, 1)):
            blocks = list(src.blocks(name, step))
            assert [b.size for b in blocks[:-1]] == [step] * (len(blocks) - 1)
            assert all(b.dtype == arr.dtype for b in blocks)
            assert np.array_equal(np.concatenate(blocks), arr.reshape(-1))
        flat = np.array([0, arr.size - 1, arr.size // 2, 0])
        want = arr.reshape(-1)[flat].astype(np.float64)
        assert np.array_equal(src.sample(name, flat), want)
    with pytest.raises(FormatError, match="sample positions outside"):
        src.sample("bias", np.array([3]))
    with pytest.raises(FormatError, match="not opened for in-place writing"):
        src.write("wte", eager.tensors["wte"])


def test_external_data_is_read_on_access_not_on_open(tmp_path: Path) -> None:
    """Cut the external file after opening: the tensors in it fail (one line, short read), the
    ones in the protobuf still read. An eager reader would already hold them all."""
    path = _save(tmp_path / "m")
    eager = load_weights(path)
    src = open_weights(path)
    data = path.parent / "weights.bin"
    data.write_bytes(b"")
    for name in ("bias", "ln", "ln16", "lnbf"):
        assert np.array_equal(src[name], eager.tensors[name])
    for read in (
        lambda n: src[n],
        lambda n: list(src.blocks(n, 100)),
        lambda n: src.sample(n, np.array([1])),
    ):
        for name in ("wte", "h0.proj", "head", "c"):
            with pytest.raises(FormatError, match="short read") as exc:
                read(name)
            assert "\n" not in str(exc.value)
    data.unlink()
    with pytest.raises(FormatError, match="cannot read") as exc:
        src["wte#2"]
    assert "\n" not in str(exc.value)


def test_opening_holds_no_external_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    big = numpy_helper.from_array(rng.normal(0, 1, (1024, 1024)).astype(np.float32), "big")
    graph = helper.make_graph([], "g", [], [], initializer=[big])
    path = _save(tmp_path / "m", model=helper.make_model(graph))

    def peak(fn: Callable[[], object]) -> int:
        tracemalloc.start()
        try:
            kept = fn()
            return tracemalloc.get_traced_memory()[1] if kept is not None else 0
        finally:
            tracemalloc.stop()

    assert peak(lambda: load_weights(path)) > 4 << 20  # the 4 MiB tensor, at least
    assert peak(lambda: open_weights(path)) < 1 << 20
    assert open_weights(path)["big"].nbytes == 4 << 20


def test_a_model_without_external_data_stays_eager(tmp_path: Path) -> None:
    path = tmp_path / "inline.onnx"
    onnx.save(_graph(), str(path))
    src, eager = open_weights(path), load_weights(path)
    assert not src.streamed and src.weight_file is not None and list(src) == list(eager.tensors)
    assert all(np.array_equal(src[n], a) for n, a in eager.tensors.items())
    with pytest.raises(FormatError, match="sample positions outside"):  # not an IndexError
        src.sample("bias", np.array([3]))


def test_writable_onnx_with_external_data_is_in_place(tmp_path: Path) -> None:
    src = open_weights(_save(tmp_path / "m"), writable=True)
    assert src.in_place and src.weight_file is None and src.format == "onnx"
    inline = tmp_path / "inline.onnx"
    onnx.save(_graph(), str(inline))
    src = open_weights(inline, writable=True)
    assert not src.in_place and src.weight_file is not None and src.weight_file.format == "onnx"


# ------------------------------------------------------------------------------------------
# hostile references: refused by the streamed source exactly as by the eager reader


def _hostile(folder: Path, entries: dict[str, str], *, dtype: int = TensorProto.FLOAT) -> Path:
    """One external tensor W of 4 elements with the given external_data entries, and a
    weights.bin of 16 bytes beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    w = TensorProto(name="W", data_type=dtype, dims=[4], data_location=TensorProto.EXTERNAL)
    for k, v in entries.items():
        e = w.external_data.add()
        e.key, e.value = k, v
    keep = numpy_helper.from_array(np.ones(2, np.float32), "keep")
    graph = helper.make_graph([], "g", [], [], initializer=[keep, w])
    path = folder / "model.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def _refusals(path: Path, limits: Limits | None = None) -> tuple[Exception, Exception]:
    got = []
    for reader in (load_weights, open_weights):
        with pytest.raises((FormatError, UnsafeInputError)) as exc:
            reader(path, limits=limits)
        assert str(exc.value) and "\n" not in str(exc.value)
        got.append(exc.value)
    return got[0], got[1]


def _at(location: str = "weights.bin", offset: str = "0", length: str = "16") -> dict[str, str]:
    return {"location": location, "offset": offset, "length": length}


@pytest.mark.parametrize(
    ("entries", "error", "message"),
    [
        (_at("../weights.bin"), UnsafeInputError, "outside the model's folder"),
        (_at("sub/../../x"), UnsafeInputError, "outside the model's folder"),
        (_at("..\\weights.bin"), UnsafeInputError, "outside the model's folder"),
        (_at("/etc/passwd"), UnsafeInputError, "outside the model's folder"),
        (_at("C:/weights.bin"), UnsafeInputError, "outside the model's folder"),
        (_at("outside.bin"), UnsafeInputError, "resolves outside"),  # a symlink out
        (_at("missing.bin"), FormatError, "missing"),
        (_at(offset="8"), FormatError, "past the end"),
        (_at(length="12"), FormatError, "claims 12 bytes"),
        (_at(offset="-4"), FormatError, "claims 16 bytes at -4"),
        (_at(offset="four"), FormatError, "bad offset or length"),
        ({"offset": "0", "length": "16"}, FormatError, "no location"),
    ],
)
def test_hostile_external_data_is_refused_like_the_eager_reader(
    tmp_path: Path, entries: dict[str, str], error: type, message: str
) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\1" * 64)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "outside.bin").symlink_to(tmp_path / "outside.bin")
    eager, streamed = _refusals(_hostile(folder, entries))
    assert type(eager) is type(streamed) is error and message in str(streamed)
    assert str(eager) == str(streamed)


def test_hostile_non_float_external_tensor_is_refused_too(tmp_path: Path) -> None:
    eager, streamed = _refusals(_hostile(tmp_path / "m", _at("/etc/passwd"), dtype=7))  # int64
    assert type(eager) is type(streamed) is UnsafeInputError
    eager, streamed = _refusals(_hostile(tmp_path / "n", _at("../x"), dtype=99))  # unknown dtype
    assert type(eager) is type(streamed) is UnsafeInputError


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limits(max_tensors=1), "over 1 tensors"),
        (Limits(max_tensor_elements=3), "over the limit of 3 elements"),
        (Limits(alloc_ratio=0.0, alloc_slack_bytes=10), "over its budget"),
    ],
)
def test_limits_bound_the_streamed_source_like_the_eager_reader(
    tmp_path: Path, limits: Limits, message: str
) -> None:
    eager, streamed = _refusals(_hostile(tmp_path / "m", _at()), limits)
    assert type(eager) is type(streamed) is FormatError and message in str(streamed)
    assert str(eager) == str(streamed)


def test_graph_node_bound_and_segments(tmp_path: Path) -> None:
    model = _graph()
    path = _save(tmp_path / "m", model=model)
    eager, streamed = _refusals(path, Limits(max_graph_nodes=1))
    assert "nodes" in str(streamed) and str(eager) == str(streamed)
    seg = _graph()
    seg.graph.initializer[0].segment.begin = 1
    seg.graph.initializer[0].segment.end = 2
    eager, streamed = _refusals(_save(tmp_path / "s", model=seg))
    assert "segmented" in str(streamed) and str(eager) == str(streamed)


def test_a_symlinked_model_folder_entry_inside_is_accepted(tmp_path: Path) -> None:
    """A symlink that stays inside the folder is fine (as for the eager reader)."""
    folder = tmp_path / "m"
    path = _hostile(folder, _at("alias.bin"))
    os.symlink("weights.bin", folder / "alias.bin")
    src = open_weights(path)
    assert src.streamed and np.array_equal(src["W"], np.arange(4, dtype=np.float32))
    assert np.array_equal(src["W"], load_weights(path).tensors["W"])

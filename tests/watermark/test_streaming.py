"""Streaming reads and marks: safetensors single and sharded (index.json), bf16/fp16, a hostile
index, and the streamed statistics against ``detect`` on the same tensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from assay.core.errors import FormatError
from assay.watermark.detect import detect
from assay.watermark.formats import load_weights, save_weights
from assay.watermark.formats._common import f32_to_bf16_bits
from assay.watermark.formats._stream import open_weights
from assay.watermark.scheme import embed
from assay.watermark.streaming import Pair, blind, embed_source, positionwise

SECRET = b"streaming-test-secret-0123456789"


def _model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "wte": rng.normal(0, 0.02, (256, 64)).astype(np.float32),
        "h0.attn": rng.normal(0, 0.02, (64, 192)).astype(np.float32),
        "h0.proj": rng.normal(0, 0.02, (64, 64)).astype(np.float32),
        "h1.attn": rng.normal(0, 0.02, (64, 192)).astype(np.float32),
        "h1.proj": rng.normal(0, 0.02, (64, 64)).astype(np.float32),
        "h1.mlp": rng.normal(0, 0.02, (256, 64)).astype(np.float32),
        "bias": np.zeros(64, np.float32),
        "steps": np.arange(4, dtype=np.int64),
    }


def _sharded(folder: Path, tensors: dict[str, np.ndarray], shards: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    weight_map = {}
    for i in range(shards):
        part = {n: tensors[n] for n in names[i::shards]}
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(folder / file))
        weight_map.update(dict.fromkeys(part, file))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def test_single_file_streams_what_load_weights_reads(tmp_path: Path) -> None:
    t = _model()
    save_file(t, str(tmp_path / "m.safetensors"))
    eager = load_weights(tmp_path / "m.safetensors")
    src = open_weights(tmp_path / "m.safetensors")
    assert src.streamed and list(src) == list(eager.tensors) and "steps" in src.other
    for name, arr in eager.tensors.items():
        assert np.array_equal(src[name], arr) and src[name] is not src[name]
    flat = np.array([0, 5, 77])
    assert np.array_equal(src.sample("wte", flat), t["wte"].reshape(-1)[flat])


def test_sharded_folder_reads_every_tensor(tmp_path: Path) -> None:
    t = _model()
    folder = _sharded(tmp_path / "sh", t)
    src = open_weights(folder)
    assert src.format == "safetensors-sharded" and len(src.files) == 3
    assert sorted(src) == sorted(n for n in t if n != "steps")
    for name in src:
        assert np.array_equal(src[name], t[name])


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_is_read_natively(tmp_path: Path, dtype: str) -> None:
    w = np.random.default_rng(1).normal(0, 0.02, (64, 96)).astype(np.float32)
    if dtype == "fp16":
        save_file({"w": w.astype(np.float16)}, str(tmp_path / "m.safetensors"))
        expected = w.astype(np.float16).astype(np.float32)
    else:
        import torch
        from safetensors.torch import save_file as save_torch

        save_torch({"w": torch.from_numpy(w).to(torch.bfloat16)}, str(tmp_path / "m.safetensors"))
        expected = (f32_to_bf16_bits(w).astype(np.uint32) << 16).view(np.float32)
    src = open_weights(tmp_path / "m.safetensors")
    got = src["w"]
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    assert src.dtypes["w"] == ("bfloat16" if dtype == "bf16" else "float16")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ix: ix["weight_map"].update(wte="../outside.safetensors"), "plain"),
        (lambda ix: ix["weight_map"].update(wte="/etc/passwd"), "plain"),
        (lambda ix: ix["weight_map"].update(wte="missing.safetensors"), "not a regular file"),
        (lambda ix: ix["weight_map"].update(wte="model-00002-of-00003.safetensors"), "not mapped"),
        (
            lambda ix: ix["weight_map"].update(ghost="model-00001-of-00003.safetensors"),
            "does not hold",
        ),
        (lambda ix: ix["weight_map"].pop("wte"), "not mapped"),
        (lambda ix: ix.update(weight_map=[]), "no weight_map"),
    ],
)
def test_hostile_index_is_refused_in_one_line(tmp_path: Path, edit, message: str) -> None:
    folder = _sharded(tmp_path / "sh", _model())
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    edit(index)
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match=message) as err:
        open_weights(folder)
    assert "\n" not in str(err.value)


def test_symlinked_shard_is_refused(tmp_path: Path) -> None:
    folder = _sharded(tmp_path / "sh", _model())
    shard = folder / "model-00001-of-00003.safetensors"
    shard.rename(tmp_path / "real.safetensors")
    shard.symlink_to(tmp_path / "real.safetensors")
    with pytest.raises(FormatError, match="not a regular file"):
        open_weights(folder)


def test_streamed_embed_matches_embed_and_save(tmp_path: Path) -> None:
    t = _model()
    save_file(t, str(tmp_path / "a.safetensors"))
    eager = load_weights(tmp_path / "a.safetensors")
    result = embed(eager.tensors, SECRET)
    save_weights(eager, result.tensors, tmp_path / "b.safetensors")
    record, _ = embed_source(open_weights(tmp_path / "a.safetensors", writable=True), SECRET)
    assert record == result.record
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_streamed_embed_of_a_sharded_bf16_checkpoint(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file as save_torch

    t = {n: a for n, a in _model().items() if a.dtype == np.float32}
    folder = tmp_path / "sh"
    folder.mkdir()
    save_torch({n: torch.from_numpy(a).to(torch.bfloat16) for n, a in t.items()},
               str(folder / "one.safetensors"))  # fmt: skip
    before = dict(open_weights(folder / "one.safetensors").items())
    record, _ = embed_source(open_weights(folder / "one.safetensors", writable=True), SECRET)
    after = open_weights(folder / "one.safetensors")
    assert {m.name for m in record.tensors} == {n for n, a in t.items() if a.ndim == 2}
    # bf16 has 8 mantissa bits: the mark moves values, and a blind test finds it
    assert any(not np.array_equal(after[n], before[n]) for n in after)
    marked = {m.name: m for m in record.tensors}
    pairs = [(dict(after.items()), Pair(n, n, False, marked[n])) for n in sorted(marked)]
    stolen = {n: a + np.float32(0.0) for n, a in after.items()}
    res = positionwise(stolen, SECRET, pairs, record)
    assert res.log10_p_corrected < -9


def test_positionwise_and_blind_agree_with_detect(tmp_path: Path) -> None:
    t = _model()
    result = embed(t, SECRET)
    marked = {**t, **result.tensors}
    del marked["steps"]
    rng = np.random.default_rng(3)
    noised = {n: a + rng.normal(0, 0.002, a.shape).astype(np.float32) for n, a in marked.items()}
    by_name = result.record.by_name()
    pairs = [(marked, Pair(n, n, False, by_name[n])) for n in sorted(by_name,
             key=lambda n: by_name[n].pattern)]  # fmt: skip
    for suspect, detected in ((noised, True), ({n: t[n] for n in marked}, False)):
        full = detect(suspect, SECRET, reference=marked, record=result.record)
        cheap = positionwise(suspect, SECRET, pairs, result.record)
        assert (full.log10_p_corrected < -9) == (cheap.log10_p_corrected < -9) == detected
        assert cheap.tensors_matched == full.tensors_matched
    b_full, b_stream = detect(noised, SECRET), blind(noised, SECRET)
    assert b_stream.log10_p == pytest.approx(b_full.log10_p, rel=1e-4, abs=1e-6)
    assert b_stream.tensors_matched == b_full.tensors_matched


def _save_bf16(path: Path, tensors: dict[str, np.ndarray]) -> None:
    import torch
    from safetensors.torch import save_file as save_torch

    save_torch({n: torch.from_numpy(a).to(torch.bfloat16) for n, a in tensors.items()}, str(path))


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_block_reads_equal_whole_reads(
    tmp_path: Path, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.watermark.formats import _stream

    monkeypatch.setattr(_stream, "_STEP", 1000)  # several blocks, the last one short
    t = {n: a for n, a in _model().items() if a.dtype == np.float32}
    path = tmp_path / "m.safetensors"
    if dtype == "bf16":
        _save_bf16(path, t)
    else:
        save_file({n: a.astype(np.float16 if dtype == "fp16" else np.float32)
                   for n, a in t.items()}, str(path))  # fmt: skip
    eager, src = load_weights(path), open_weights(path)
    for name, arr in eager.tensors.items():
        assert src[name].dtype == np.float32 and np.array_equal(src[name], arr)
        for step in (7, 1000, arr.size):
            blocks = list(src.blocks(name, step))
            assert [b.size for b in blocks[:-1]] == [step] * (len(blocks) - 1)
            assert np.array_equal(np.concatenate([b.copy() for b in blocks]), arr.reshape(-1))


def test_bf16_positionwise_in_blocks_equals_the_whole_tensor_test(tmp_path: Path) -> None:
    """The streamed test (reference read a block at a time, bf16 converted per block) gives the
    result of the same test over whole float32 tensors in memory, bit for bit."""
    from assay.watermark.streaming import STEP

    rng = np.random.default_rng(5)
    t = {
        "wte": rng.normal(0, 0.02, (STEP // 256 + 300, 256)).astype(np.float32),  # > 1 block
        "h0.attn": rng.normal(0, 0.02, (64, 192)).astype(np.float32),
        "h1.attn": rng.normal(0, 0.02, (64, 192)).astype(np.float32),
        "h0.proj": rng.normal(0, 0.02, (64, 64)).astype(np.float32),
    }
    _save_bf16(tmp_path / "ref.safetensors", t)
    record, _ = embed_source(open_weights(tmp_path / "ref.safetensors", writable=True), SECRET)
    ref = open_weights(tmp_path / "ref.safetensors")
    noised = {n: a + rng.normal(0, 0.002, a.shape).astype(np.float32) for n, a in ref.items()}
    _save_bf16(tmp_path / "suspect.safetensors", noised)
    suspect = open_weights(tmp_path / "suspect.safetensors")
    by_name = record.by_name()
    order = sorted(by_name, key=lambda n: by_name[n].pattern)
    streamed = positionwise(suspect, SECRET, [(ref, Pair(n, n, False, by_name[n]))
                                              for n in order], record)  # fmt: skip
    whole_ref, whole_suspect = dict(ref.items()), dict(suspect.items())
    whole = positionwise(whole_suspect, SECRET, [(whole_ref, Pair(n, n, False, by_name[n]))
                                                 for n in order], record)  # fmt: skip
    assert streamed.to_dict() == whole.to_dict()
    assert streamed.log10_p_corrected < -9 and streamed.tensors_matched == len(t)


def _torch_file(path: Path, tensors: dict) -> Path:
    import torch

    torch.save(tensors, str(path))
    return path


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_torch_zip_streams_from_its_stored_records(tmp_path: Path, dtype: str) -> None:
    import torch

    g = torch.Generator().manual_seed(0)
    wte = torch.randn(300, 64, generator=g).to(getattr(torch, dtype))
    big = torch.randn(40, 64, generator=g).to(getattr(torch, dtype))
    state = {
        "wte": wte,
        "head": wte,  # tied: one storage, two names
        "tail": big[8:],  # a view at a storage offset, contiguous
        "ln.bias": torch.zeros(64, dtype=getattr(torch, dtype)),
        "steps": torch.arange(4),
    }
    path = _torch_file(tmp_path / "m.pt", state)
    eager, src = load_weights(path), open_weights(path)
    assert src.streamed and src.format == "torch" and "steps" in src.other
    assert list(src) == list(eager.tensors) and src.dtypes == eager.dtypes
    for name, arr in eager.tensors.items():
        assert np.array_equal(src[name], arr) and src[name] is not src[name]
        assert np.array_equal(np.concatenate(list(src.blocks(name, 1000))), arr.reshape(-1))
    flat = np.array([0, 5, 77, 64 * 32 - 1])
    assert np.array_equal(src.sample("tail", flat), eager.tensors["tail"].reshape(-1)[flat])
    with pytest.raises(FormatError, match="not opened for in-place writing"):
        open_weights(path, writable=True).write("wte", eager.tensors["wte"])


def test_torch_zip_with_a_strided_or_compressed_weight_is_read_eagerly(tmp_path: Path) -> None:
    import zipfile

    import torch

    w = torch.randn(32, 48, generator=torch.Generator().manual_seed(1))
    strided = _torch_file(tmp_path / "t.pt", {"w": w.t(), "v": w})  # a transposed view
    src = open_weights(strided)
    assert not src.streamed and np.array_equal(src["w"], load_weights(strided).tensors["w"])
    plain = _torch_file(tmp_path / "p.pt", {"w": w})
    deflated = tmp_path / "d.pt"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(deflated, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info), compress_type=zipfile.ZIP_DEFLATED)
    src = open_weights(deflated)
    assert not src.streamed and np.array_equal(src["w"], w.numpy())

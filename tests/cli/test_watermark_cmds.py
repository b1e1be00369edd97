"""`assay watermark embed|detect` and `assay trace` through the CLI (click's runner, one home)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from assay.cli.app import cli  # noqa: E402
from assay.core.settings import Settings  # noqa: E402
from assay.mlflow_access.artifacts import local_path_of  # noqa: E402
from assay.registry.facade import Registry  # noqa: E402
from assay.registry.registration import register_model  # noqa: E402
from assay.registry.versions import require_artifact  # noqa: E402

CLEARED = (
    "ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE", "ASSAY_ENFORCE",
    "ASSAY_WATERMARK_SECRET",
)  # fmt: skip
pytestmark = pytest.mark.slow


import wm_torch as T  # noqa: E402


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("wmcli") / "home"
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(home))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        mp.setenv("HF_HUB_OFFLINE", "1")
        Registry.initialise(Settings.from_env())
        yield home


@pytest.fixture(scope="module")
def registered(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 of ``mlp`` registered (and so watermarked); returns its marked file."""
    registry = Registry.open(Settings.from_env())
    folder = tmp_path_factory.mktemp("src") / "mlp"
    T.save_safetensors(T.state(T.train(seed=0, epochs=4)), folder)
    assert register_model(registry, "mlp", str(folder)).watermark is not None
    with registry.store.session(readonly=True) as session:
        uri = require_artifact(session, "model", "mlp", "1").uri
    path = local_path_of(uri or "")
    assert path is not None
    return path / "model.safetensors"


def _run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_trace_json_match_and_no_match(registered: Path, tmp_path: Path) -> None:
    stolen = T.stolen_copy(T.read_safetensors(registered), tmp_path, epochs=2)
    res = _run("trace", str(stolen), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    best = data["candidates"][0]
    assert (best["ref"], best["method"], best["verdict"]) == ("mlp/1", "watermark", "match")
    assert best["log10_p_corrected"] <= -9
    assert "match mlp/1" in data["summary"]

    indep = T.save_safetensors(T.state(T.train(seed=77, epochs=4)), tmp_path / "indep")
    res = _run("trace", str(indep), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["candidates"] and all(c["verdict"] != "match" for c in data["candidates"])
    assert data["candidates"][0]["verdict"] == "no-match"

    res = _run("trace", str(stolen))  # the table for people
    assert res.exit_code == 0 and "match" in res.output


def test_detect_against_registered_reference(registered: Path, tmp_path: Path) -> None:
    permuted = T.save_safetensors(T.permute(T.read_safetensors(registered)), tmp_path / "p")
    res = _run("watermark", "detect", str(permuted), "--reference", "models:/mlp/1", "--json")
    assert res.exit_code == 0, res.output
    (result,) = json.loads(res.stdout)["results"]
    assert result["verdict"] == "detected" and result["method"] == "non-blind"
    res = _run("watermark", "detect", str(registered))  # blind, text output
    assert res.exit_code == 0 and "blind" in res.output


def test_embed_then_detect_and_refuse_existing_output(registered: Path, tmp_path: Path) -> None:
    src = T.save_safetensors(T.state(T.train(seed=3, epochs=2)), tmp_path / "src")
    out = tmp_path / "marked.safetensors"
    res = _run("watermark", "embed", str(src), str(out), "--strength", "0.02", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["tensors"] == 3
    res = _run("watermark", "detect", str(out), "--reference", str(src), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["results"][0]["verdict"] == "detected"

    before = out.read_bytes()
    mtime = out.stat().st_mtime_ns
    res = _run("watermark", "embed", str(src), str(out))
    assert res.exit_code == 1
    assert res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    assert "exists" in res.stderr
    assert out.read_bytes() == before and out.stat().st_mtime_ns == mtime


def test_legacy_torch_copy_found_by_trace_and_detect(registered: Path, tmp_path: Path) -> None:
    import torch

    tensors = T.read_safetensors(registered)
    state = {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}
    zip_copy, legacy_copy = tmp_path / "copy-zip.pt", tmp_path / "copy-legacy.pt"
    torch.save(state, zip_copy)
    torch.save(state, legacy_copy, _use_new_zipfile_serialization=False)
    seen = {}
    for path in (zip_copy, legacy_copy):
        res = _run("trace", str(path), "--json")
        assert res.exit_code == 0, res.output
        best = json.loads(res.stdout)["candidates"][0]
        assert (best["ref"], best["verdict"]) == ("mlp/1", "match"), best
        res = _run("watermark", "detect", str(path), "--reference", "models:/mlp/1", "--json")
        assert res.exit_code == 0, res.output
        (result,) = json.loads(res.stdout)["results"]
        assert result["verdict"] == "detected"
        seen[path] = (best["method"], best["log10_p_corrected"], result["log10_p_corrected"])
    assert seen[zip_copy] == seen[legacy_copy]


@pytest.mark.parametrize("location", ["model.onnx.data", "weights.bin"])
def test_onnx_copy_with_external_data_traced_streamed(
    registered: Path, tmp_path: Path, location: str
) -> None:
    """An ONNX copy whose weights live in external data (read on access) is traced as its inline
    twin (read whole): the same method, p-value and tensors, by file and by folder (whose
    ``weights.bin`` is the model's data, not a second weight file)."""
    import onnx

    from assay.watermark.formats._stream import open_weights

    inline = T.export_onnx(T.load(T.read_safetensors(registered)), tmp_path / "in" / "model.onnx")
    folder = tmp_path / "ext"
    folder.mkdir()
    external = folder / "model.onnx"
    onnx.save(onnx.load(str(inline)), str(external), save_as_external_data=True,
              location=location, size_threshold=256)  # fmt: skip
    assert not open_weights(inline).streamed and open_weights(external).streamed
    seen = {}
    for path in (inline, external, folder):
        res = _run("trace", str(path), "--json")
        assert res.exit_code == 0, res.output
        best = json.loads(res.stdout)["candidates"][0]
        assert (best["ref"], best["method"], best["verdict"]) == ("mlp/1", "watermark", "match")
        seen[path] = (best["log10_p_corrected"], best["tensors_matched"])
    assert seen[inline] == seen[external] == seen[folder]


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_detect_refuses_malicious_pickle(registered: Path, tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(64, 64), "x": _Payload(marker)}, evil)
    assert not marker.exists()
    res = _run("watermark", "detect", str(evil))
    assert res.exit_code == 1, res.output
    err = res.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert not marker.exists()
    res = _run("trace", str(evil))
    assert res.exit_code == 1 and not marker.exists()


def test_no_float_weights_is_an_error(registered: Path, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    ints = tmp_path / "ints.safetensors"
    save_file({"ids": np.arange(4096, dtype=np.int64).reshape(64, 64)}, str(ints))
    for args in (("watermark", "detect", str(ints)), ("trace", str(ints))):
        res = _run(*args)
        assert res.exit_code == 1, res.output
        err = res.stderr.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1, err
    out = tmp_path / "never.safetensors"
    res = _run("watermark", "embed", str(ints), str(out))
    assert res.exit_code == 1 and not out.exists()


def _sharded_checkpoint(folder: Path, shards: list[dict[str, np.ndarray]]) -> Path:
    """An HF-style sharded safetensors checkpoint: shards, their index, a config."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    weight_map = {}
    for i, tensors in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(folder / file))
        weight_map.update(dict.fromkeys(tensors, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    return folder


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_embed_a_sharded_folder_shard_by_shard(registered: Path, tmp_path: Path) -> None:
    from assay.watermark.formats._stream import open_weights

    rng = np.random.default_rng(11)
    w = lambda *s: rng.normal(0, 0.02, s).astype(np.float32)  # noqa: E731
    src = _sharded_checkpoint(tmp_path / "src", [
        {"wte": w(512, 64), "h0.attn": w(64, 192)},
        {"h0.mlp": w(64, 256), "h0.bias": np.zeros(64, np.float32)},
        {"h1.attn": w(64, 192), "h1.mlp": w(64, 256)},
        {"ln_f.weight": np.ones(64, np.float32)},  # nothing to mark here: copied as it is
    ])  # fmt: skip
    before = _tree(src)
    out = tmp_path / "marked"
    res = _run("watermark", "embed", str(src), str(out), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["tensors"] == 5 and data["parameters"] == 512 * 64 + 2 * 64 * 192 + 2 * 64 * 256
    assert _tree(src) == before  # the source is never written
    after = _tree(out)
    assert sorted(after) == sorted(before)
    assert after["config.json"] == before["config.json"]
    index = "model.safetensors.index.json"
    assert after[index] == before[index]
    shards = sorted(n for n in after if n.endswith(".safetensors"))
    assert all(after[n] != before[n] for n in shards[:3])  # every shard with a matrix marked
    assert after[shards[3]] == before[shards[3]]
    marked, original = open_weights(out), open_weights(src)
    assert np.array_equal(marked["h0.bias"], original["h0.bias"])
    assert not np.array_equal(marked["wte"], original["wte"])
    # the largest marked shard against its unmarked original: the mark is there
    res = _run("watermark", "detect", str(out / shards[0]), "--reference", str(src / shards[0]),
               "--json")  # fmt: skip
    assert res.exit_code == 0 and json.loads(res.stdout)["results"][0]["verdict"] == "detected"
    res = _run("watermark", "embed", str(src), str(out))
    assert res.exit_code == 1 and "exists" in res.stderr and _tree(out) == after


def test_embed_of_a_folder_with_a_failing_shard_leaves_nothing(
    registered: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(12)
    bad = rng.normal(0, 0.02, (64, 192)).astype(np.float32)
    bad[3, 5] = np.inf
    src = _sharded_checkpoint(tmp_path / "src", [
        {"wte": rng.normal(0, 0.02, (512, 64)).astype(np.float32)},  # marked first, then
        {"h0.attn": bad},  # a non-finite weight: this shard cannot be marked, the embed fails
    ])  # fmt: skip
    before = _tree(src)
    out = tmp_path / "marked"
    res = _run("watermark", "embed", str(src), str(out))
    assert res.exit_code == 1, res.output
    err = res.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert "model-00002-of-00002.safetensors" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    assert _tree(src) == before
    # a shard the index does not match is refused before anything is written
    (src / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"wte": "model-00002-of-00002.safetensors",
                                   "h0.attn": "model-00002-of-00002.safetensors"}}))  # fmt: skip
    res = _run("watermark", "embed", str(src), str(out))
    assert res.exit_code == 1 and "does not hold it" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# ------------------------------------------------------------------------------------------
# embed in place: torch archives and ONNX external data marked on a private copy


def _torch_state(seed: int) -> dict:
    import torch

    return {k: torch.from_numpy(v.copy()) for k, v in T.state(T.train(seed=seed, epochs=2)).items()}


def test_embed_a_torch_file_in_place(registered: Path, tmp_path: Path) -> None:
    import zipfile

    import torch

    from assay.tracing.watermark_ops import _in_place_probe

    src = tmp_path / "model.pt"
    torch.save(_torch_state(6), src)
    before = src.read_bytes()
    assert _in_place_probe(src).in_place  # the copy is marked in place, not load + save
    out = tmp_path / "marked.pt"
    res = _run("watermark", "embed", str(src), str(out), "--strength", "0.02", "--json")
    assert res.exit_code == 0, res.output
    assert src.read_bytes() == before  # the user's file is never written
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
    marked = torch.load(out, weights_only=True)
    assert set(marked) == set(torch.load(src, weights_only=True))
    res = _run("watermark", "detect", str(out), "--reference", str(src), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["results"][0]["verdict"] == "detected"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marked.pt", "model.pt"]


def test_embed_of_a_torch_file_whose_views_disagree_leaves_nothing(
    registered: Path, tmp_path: Path
) -> None:
    import torch

    base = torch.randn(80, 64, generator=torch.Generator().manual_seed(3))
    src = tmp_path / "views.pt"
    torch.save({"a": base[:60], "b": base[20:]}, src)  # overlapping views: eager, refused
    res = _run("watermark", "embed", str(src), str(tmp_path / "out.pt"))
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "disagree" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["views.pt"]


def test_embed_a_folder_with_an_onnx_model_and_external_data(
    registered: Path, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort

    inline = T.export_onnx(T.train(seed=7, epochs=2), tmp_path / "in" / "model.onnx")
    folder = tmp_path / "src"
    folder.mkdir()
    onnx.save(onnx.load(str(inline)), str(folder / "model.onnx"), save_as_external_data=True,
              location="weights.bin", size_threshold=256)  # fmt: skip
    refs = [
        [(e.key, e.value) for e in t.external_data]
        for t in onnx.load(str(folder / "model.onnx"), load_external_data=False).graph.initializer
    ]
    out = tmp_path / "out"
    res = _run("watermark", "embed", str(folder), str(out), "--strength", "0.02", "--json")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "weights.bin"]
    marked = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert [[(e.key, e.value) for e in t.external_data] for t in marked.graph.initializer] == refs
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in sess.get_inputs()}  # fmt: skip
    assert sess.run(None, feed)[0].shape[0] == 1
    res = _run("watermark", "detect", str(out / "model.onnx"), "--reference",
               str(folder / "model.onnx"), "--json")  # fmt: skip
    assert res.exit_code == 0 and json.loads(res.stdout)["results"][0]["verdict"] == "detected"


def test_register_a_torch_pytorch_model_bin(registered: Path, tmp_path: Path) -> None:
    import torch

    registry = Registry.open(Settings.from_env())
    folder = tmp_path / "tmlp"
    folder.mkdir()
    state = _torch_state(8)
    torch.save(state, folder / "pytorch_model.bin")
    before = (folder / "pytorch_model.bin").read_bytes()
    result = register_model(registry, "tmlp", str(folder))
    assert result.watermark is not None and result.watermark["files"] == ["pytorch_model.bin"]
    assert (folder / "pytorch_model.bin").read_bytes() == before  # only the staged copy marked
    with registry.store.session(readonly=True) as session:
        uri = require_artifact(session, "model", "tmlp", "1").uri
    stored = local_path_of(uri or "") / "pytorch_model.bin"
    marked = torch.load(stored, weights_only=True)
    assert set(marked) == set(state) and any(not torch.equal(marked[k], state[k]) for k in state)
    res = _run("trace", str(stored), "--json")
    assert res.exit_code == 0, res.output
    best = json.loads(res.stdout)["candidates"][0]
    assert (best["ref"], best["verdict"]) == ("tmlp/1", "match"), best


def test_a_copy_changed_in_the_middle_of_an_in_place_embed_leaves_nothing(
    registered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from assay.watermark.formats._stream import TensorSource

    src = tmp_path / "model.pt"
    torch.save(_torch_state(9), src)
    original = TensorSource.write
    calls = []

    def write(self, name, values):  # the file grows under the writer after its first tensor
        calls.append(name)
        if len(calls) == 2:
            with open(self.path, "ab") as fh:
                fh.write(b"\0")
        return original(self, name, values)

    monkeypatch.setattr(TensorSource, "write", write)
    res = _run("watermark", "embed", str(src), str(tmp_path / "out.pt"))
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "changed since it was opened" in res.stderr and len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]

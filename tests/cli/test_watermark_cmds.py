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

"""``trace_suspect`` end to end through a real registry: register, steal, attack, trace back.

One initialised ASSAY_HOME serves the module (MLflow's schema creation costs seconds). Three
versions of a torch digits MLP are registered (the registry watermarks them); suspects are derived
from the *registered, marked* bytes in the artifact store, as a thief would get them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

import wm_torch as T  # noqa: E402

from assay.core.settings import Settings  # noqa: E402
from assay.mlflow_access.artifacts import local_path_of  # noqa: E402
from assay.registry.facade import Registry  # noqa: E402
from assay.registry.registration import register_model  # noqa: E402
from assay.registry.versions import require_artifact  # noqa: E402
from assay.tracing.trace import trace_suspect  # noqa: E402

CLEARED = (
    "ASSAY_DB_URL",
    "MLFLOW_TRACKING_URI",
    "ASSAY_KEY",
    "ASSAY_KEY_PASSPHRASE",
    "ASSAY_ENFORCE",
)
CLEARED += ("ASSAY_WATERMARK_SECRET",)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    home = tmp_path_factory.mktemp("trace") / "home"
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(home))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        mp.setenv("HF_HUB_OFFLINE", "1")
        Registry.initialise(Settings.from_env())
        yield Registry.open(Settings.from_env())


def _marked_file(registry: Registry, name: str, version: str) -> Path:
    with registry.store.session(readonly=True) as session:
        uri = require_artifact(session, "model", name, version).uri
    folder = local_path_of(uri or "")
    assert folder is not None
    return folder / "model.safetensors"


@pytest.fixture(scope="module")
def versions(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three registered versions of ``mlp`` (different seeds); their marked files in the store."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for version, seed in (("1", 0), ("2", 1), ("3", 2)):
        model = T.train(seed=seed)
        folder = root / f"v{version}"
        T.save_safetensors(T.state(model), folder)
        result = register_model(registry, "mlp", str(folder))
        assert result.version == version and result.watermark is not None
        out[version] = _marked_file(registry, "mlp", version)
    return out


@contextmanager
def _own_registry(factory: pytest.TempPathFactory, label: str) -> Iterator[Registry]:
    """A registry of a test's own (for versions the module's other tests must not see)."""
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(factory.mktemp(label) / "home"))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        Registry.initialise(Settings.from_env())
        yield Registry.open(Settings.from_env())


def _best(report):
    best = report.best()
    assert best is not None, report.to_dict()
    return best


def test_registration_keeps_fidelity(versions: dict[str, Path], tmp_path: Path) -> None:
    marked = T.read_safetensors(versions["1"])
    original = T.state(T.train(seed=0))
    assert any(not np.array_equal(marked[k], original[k]) for k in marked)  # it was marked
    _, x_te, _, _ = T.digits()
    import torch

    with torch.no_grad():
        a = T.load(marked)(torch.from_numpy(x_te)).argmax(1)
        b = T.load(original)(torch.from_numpy(x_te)).argmax(1)
    assert float((a == b).float().mean()) >= 0.999


def test_stolen_finetuned_pruned_onnx_copy_traced(
    registry: Registry, versions: dict[str, Path], tmp_path: Path
) -> None:
    marked = T.read_safetensors(versions["1"])
    stolen = T.stolen_copy(marked, tmp_path)
    import onnxruntime as ort

    _, x_te, _, y_te = T.digits()
    sess = ort.InferenceSession(str(stolen), providers=["CPUExecutionProvider"])
    acc = float((sess.run(None, {"x": x_te})[0].argmax(1) == y_te).mean())
    assert acc >= T.accuracy(T.load(marked)) - 0.05  # the thief kept a working model
    report = trace_suspect(registry, stolen)
    best = _best(report)
    assert (best.model, best.version, best.method, best.verdict) == (
        "mlp",
        "1",
        "watermark",
        "match",
    )
    assert best.log10_p_corrected is not None and best.log10_p_corrected <= -9
    assert best.tensors_matched == 3
    others = [c for c in report.candidates if c.version != "1" and c.method == "watermark"]
    assert all(c.verdict != "match" for c in others), report.to_dict()


def test_exact_copy_matches_by_hash(
    registry: Registry, versions: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(versions["2"], copy)
    best = _best(trace_suspect(registry, copy))
    assert (best.version, best.method, best.verdict) == ("2", "exact-hash", "match")


def test_independent_model_no_match(
    registry: Registry, versions: dict[str, Path], tmp_path: Path
) -> None:
    path = T.save_safetensors(T.state(T.train(seed=123)), tmp_path / "indep")
    report = trace_suspect(registry, path)
    assert report.candidates, report.to_dict()
    assert all(c.verdict != "match" for c in report.candidates), report.to_dict()
    assert _best(report).verdict == "no-match"


def test_permuted_copy_matches(
    registry: Registry, versions: dict[str, Path], tmp_path: Path
) -> None:
    marked = T.read_safetensors(versions["3"])
    permuted = T.permute(marked, seed=5)
    np.testing.assert_allclose(
        T.load(permuted)(__import__("torch").zeros(1, 64)).detach().numpy(),
        T.load(marked)(__import__("torch").zeros(1, 64)).detach().numpy(),
        rtol=1e-4,
        atol=1e-5,
    )
    path = T.save_safetensors(permuted, tmp_path / "perm")
    best = _best(trace_suspect(registry, path))
    assert (best.version, best.method, best.verdict) == ("3", "watermark", "match")


def test_right_version_ranks_first(
    registry: Registry, versions: dict[str, Path], tmp_path: Path
) -> None:
    marked = T.read_safetensors(versions["2"])
    x, y = T.other_data()
    tuned = T.state(T.fit(T.load(marked), x, y, epochs=2, lr=1e-3, seed=3))
    path = T.save_safetensors(tuned, tmp_path / "tuned")
    report = trace_suspect(registry, path, top=3)
    watermark = [c for c in report.candidates if c.method == "watermark"]
    assert [c.version for c in watermark][0] == "2"
    assert watermark[0].verdict == "match"
    assert all(c.verdict != "match" for c in watermark[1:]), report.to_dict()
    assert report.searched == 3


def test_a_sibling_version_under_the_same_secret_is_not_named_a_match(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Siblings share the secret's pattern: on a 2 M-parameter MLP a copy of v1 shows the mark
    against v2 at p ~ 1e-17 too. Only v1 may be named; v2 is reported as our mark, explained by v1."""
    hidden = (2048, 1024)
    with _own_registry(tmp_path_factory, "wide") as registry:
        files = {}
        for version, seed in (("1", 0), ("2", 1)):
            folder = tmp_path / f"v{version}"
            T.save_safetensors(T.state(T.train(seed=seed, hidden=hidden)), folder)
            assert register_model(registry, "wide", str(folder)).version == version
            files[version] = _marked_file(registry, "wide", version)
        x, y = T.other_data()
        marked = T.read_safetensors(files["1"])
        tuned = T.fit(T.load(marked, hidden=hidden), x, y, epochs=2, lr=1e-3, seed=0)
        report = trace_suspect(registry, T.save_safetensors(T.state(tuned), tmp_path / "t"))
    by_version = {c.version: c for c in report.candidates if c.method == "watermark"}
    assert by_version["1"].verdict == "match"
    sibling = by_version["2"]
    assert sibling.log10_p_corrected is not None and sibling.log10_p_corrected <= -9
    assert sibling.verdict == "inconclusive", report.to_dict()
    assert any("wide/1 explains it better" in n for n in sibling.notes)
    assert report.best() is by_version["1"]
    assert any(n.startswith("wide/2: our mark, but wide/1") for n in report.notes)


@pytest.mark.parametrize("share", [0.0, 0.01])
def test_non_finite_values_do_not_hide_a_copy(
    registry: Registry, versions: dict[str, Path], tmp_path: Path, share: float
) -> None:
    """One NaN (share 0: a single element), or 1 % NaN and inf, in a stolen copy: the rest of
    each tensor is still evidence (the review's F8: one NaN used to drop the whole tensor)."""
    rng = np.random.default_rng(4)
    tensors = T.read_safetensors(versions["1"])
    for arr in tensors.values():
        if arr.ndim == 2:
            flat = arr.reshape(-1)
            count = max(1, int(share * flat.size))
            at = rng.choice(flat.size, size=count, replace=False)
            flat[at] = np.where(np.arange(count) % 2, np.inf, np.nan)[:count] if share else np.nan
    path = T.save_safetensors(tensors, tmp_path / "nan")
    report = trace_suspect(registry, path)
    best = _best(report)
    assert (best.version, best.method, best.verdict) == ("1", "watermark", "match"), (
        report.to_dict()
    )
    assert best.similarity is not None and np.isfinite(best.similarity)
    assert any("non-finite" in n for n in best.notes)


def test_legacy_torch_copy_traced_as_the_zip_copy(
    registry: Registry, versions: dict[str, Path], tmp_path: Path
) -> None:
    """A thief re-saving with ``_use_new_zipfile_serialization=False`` is traced all the same."""
    import torch

    marked = T.read_safetensors(versions["1"])
    x, y = T.other_data()
    state = T.fit(T.load(marked), x, y, epochs=1, lr=1e-3, seed=3).state_dict()
    zip_copy, legacy_copy = tmp_path / "stolen-zip.pt", tmp_path / "stolen-legacy.pt"
    torch.save(state, zip_copy)
    torch.save(state, legacy_copy, _use_new_zipfile_serialization=False)
    found = {}
    for path in (zip_copy, legacy_copy):
        best = _best(trace_suspect(registry, path))
        assert (best.model, best.version, best.method, best.verdict) == (
            "mlp",
            "1",
            "watermark",
            "match",
        )
        found[path] = (best.log10_p_corrected, best.tensors_matched)
    assert found[zip_copy] == found[legacy_copy]


def test_a_shared_tokenizer_is_not_an_exact_copy_and_a_copy_names_its_own_version(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Two versions and an unrelated model share one public 134 KB tokenizer: only model files
    are evidence of a copy (the review's F5), and the copy of v2 is named v2, not v1."""
    tokenizer = json.dumps({"vocab": {f"tok{i}": i for i in range(8000)}}).encode()
    assert len(tokenizer) > 64 * 1024
    with _own_registry(tmp_path_factory, "tok") as registry:
        folders = {}
        for version, seed in (("1", 0), ("2", 1)):
            folder = tmp_path / f"v{version}"
            T.save_safetensors(T.state(T.train(seed=seed, epochs=1, hidden=(128, 64))), folder)
            (folder / "tokenizer.json").write_bytes(tokenizer)
            assert register_model(registry, "llm", str(folder)).version == version
            folders[version] = _marked_file(registry, "llm", version).parent
        unrelated = tmp_path / "unrelated"
        T.save_safetensors(T.state(T.train(seed=7, epochs=1, hidden=(128, 64))), unrelated)
        (unrelated / "tokenizer.json").write_bytes(tokenizer)
        report = trace_suspect(registry, unrelated)
        assert not [c for c in report.candidates if c.method == "exact-hash"], report.to_dict()
        assert all(c.verdict != "match" for c in report.candidates), report.to_dict()
        assert any("tokenizer.json (shared by design" in n for n in report.notes)

        stolen = tmp_path / "stolen-v2"
        shutil.copytree(folders["2"], stolen)
        report = trace_suspect(registry, stolen)
    best = _best(report)
    assert (best.version, best.method, best.verdict) == ("2", "exact-hash", "match")
    assert [c.version for c in report.candidates if c.method == "exact-hash"] == ["2"]
    assert "exact copy" in report.summary()
    text = json.dumps(report.to_dict(), allow_nan=False)  # valid JSON: no -Infinity
    assert json.loads(text)["candidates"][0]["log10_p_corrected"] is None


def test_a_malformed_suspect_is_refused_before_any_hashing(
    registry: Registry, versions: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid header followed by a long tail (a sparse file costs no disk): the reader refuses it
    at once; the exact-copy hashing never reads it (the review's F9)."""
    from assay.core.errors import FormatError
    from assay.tracing import trace

    path = tmp_path / "suspect.safetensors"
    shutil.copyfile(versions["1"], path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size + 64 * 1024**2)  # a hole, not written bytes

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed a suspect the reader refuses")

    monkeypatch.setattr(trace, "hash_files", no_hashing)
    with pytest.raises(FormatError, match="trailing bytes"):
        trace_suspect(registry, path)

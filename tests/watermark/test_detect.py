"""Detection on a real digits MLP: fidelity, attacks, wrong keys, calibration, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import wm_models as M  # noqa: E402

from assay.watermark.detect import detect
from assay.watermark.scheme import WatermarkError, embed

STRONG = -9.0  # log10 of the 1e-9 decision threshold


@pytest.fixture(scope="module")
def owner():
    base = M.train()
    res = embed(base, M.SECRET)
    return base, M.merged(base, res.tensors), res.record


def _nb(suspect, owner):
    _, marked, record = owner
    return detect(suspect, M.SECRET, reference=marked, record=record)


# --- fast checks on random tensors ------------------------------------------------------------


def test_random_tensors_copy_permutation_and_wrong_key() -> None:
    rng = np.random.default_rng(0)
    t = {"w1": rng.normal(0, 0.1, (256, 32)), "w2": rng.normal(0, 0.1, (64, 256))}
    t = {k: v.astype(np.float32) for k, v in t.items()}
    res = embed(t, M.SECRET)
    marked = M.merged(t, res.tensors)
    d = detect(marked, M.SECRET, reference=marked, record=res.record)
    assert d.method == "non-blind" and d.log10_p_corrected < STRONG and d.tensors_matched == 2
    perm = rng.permutation(256)
    permuted = {"a": marked["w1"][perm], "b": marked["w2"][:, perm]}
    assert (
        detect(permuted, M.SECRET, reference=marked, record=res.record).log10_p_corrected < STRONG
    )
    assert detect(t, M.SECRET, reference=marked, record=res.record).p_value > 1e-3  # unmarked
    assert detect(marked, M.OTHER_SECRET, reference=t).p_value > 1e-3
    with pytest.raises(WatermarkError):
        detect(marked, M.OTHER_SECRET, reference=marked, record=res.record)


# --- the real model ---------------------------------------------------------------------------


@pytest.mark.slow
def test_fidelity(owner) -> None:
    base, marked, _ = owner
    _, x_te, _, y_te = M.digits()
    agree = float(np.mean(M.predict(base, x_te) == M.predict(marked, x_te)))
    assert agree >= 0.999
    assert abs(M.accuracy(marked) - M.accuracy(base)) <= 0.001


@pytest.mark.slow
def test_marked_model_itself_blind_and_non_blind(owner) -> None:
    base, marked, record = owner
    assert _nb(marked, owner).log10_p_corrected < STRONG
    blind = detect(marked, M.SECRET)
    assert blind.method == "blind" and blind.log10_p_corrected < STRONG, blind.z
    assert detect(marked, M.SECRET, record=record).log10_p_corrected < STRONG


@pytest.mark.slow
def test_unmarked_model_and_wrong_secret_are_not_detected(owner) -> None:
    base, marked, record = owner
    assert _nb(base, owner).p_value > 1e-3
    assert detect(base, M.SECRET).p_value > 1e-3
    assert detect(marked, M.OTHER_SECRET).p_value > 1e-3
    assert detect(marked, M.OTHER_SECRET, reference=base).p_value > 1e-3
    with pytest.raises(WatermarkError):
        detect(marked, M.OTHER_SECRET, reference=marked, record=record)


ATTACKS = {
    "permutation": lambda t: M.permute_and_scale(t, scale=False),
    "permutation+scale": M.permute_and_scale,
    "signed-scale": M.signed_scale,
    "nso-split+dummies": M.split_neurons,
    "prune-50": M.prune,
    "int8": M.int8,
    "noise-0.1": M.noise,
    "onnx-transpose-rename": M.export_like_onnx,
    "fine-tune-3ep": lambda t: M.fine_tune(t, *M.other_data(), epochs=3),
    "chain": lambda t: M.int8(
        M.prune(M.fine_tune(M.permute_and_scale(t), *M.other_data(), epochs=3))
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attacks_still_detected(owner, attack, capsys) -> None:
    _, marked, _ = owner
    suspect = ATTACKS[attack](marked)
    d = _nb(suspect, owner)
    with capsys.disabled():
        print(
            f"\n[attack] {attack:24s} z={d.z:9.1f} z_sign={d.z_sign:8.1f} log10 p_corr={d.log10_p_corrected:.1f}"
        )
    assert d.log10_p_corrected < STRONG
    if attack.startswith("permutation"):
        assert abs(detect(suspect, M.SECRET).z) < 5  # naive (blind, unaligned) correlation is lost


@pytest.mark.slow
def test_calibration_on_independent_models(capsys) -> None:
    """~200 (independently trained model, key) null pairs, non-blind and blind."""
    models = [M.train((64, 32), seed=s, max_iter=40) for s in range(21)]
    log_ps_nb, log_ps_b = [], []
    for i in range(20):
        secret = f"calibration-key-{i:04d}-padding".encode()
        res = embed(models[i], secret, min_size=256)
        marked = M.merged(models[i], res.tensors)
        for j in range(21):
            if j == i:
                continue
            log_ps_nb.append(detect(models[j], secret, reference=marked, record=res.record).log10_p)
            if j % 4 == 0:
                log_ps_b.append(detect(models[j], secret, min_size=256).log10_p)
    for name, lp in (("non-blind", np.array(log_ps_nb)), ("blind", np.array(log_ps_b))):
        rates = {a: float(np.mean(lp <= np.log10(a))) for a in (0.1, 0.01, 0.001)}
        with capsys.disabled():
            print(f"\n[calibration] {name}: n={len(lp)} FPR {rates} min log10 p={lp.min():.2f}")
        for a, rate in rates.items():
            assert rate <= a + 2.5 * np.sqrt(a * (1 - a) / len(lp)), (name, a, rate)
        assert lp.min() > STRONG


@pytest.mark.slow
def test_speed_10m_parameters(capsys) -> None:
    rng = np.random.default_rng(0)
    t = {f"l{i}": rng.normal(0, 0.02, (2500, 1000)).astype(np.float32) for i in range(4)}
    t0 = time.perf_counter()
    res = embed(t, M.SECRET)
    t1 = time.perf_counter()
    marked = M.merged(t, res.tensors)
    b = detect(marked, M.SECRET)
    t2 = time.perf_counter()
    nb = detect(marked, M.SECRET, reference=marked, record=res.record)
    t3 = time.perf_counter()
    with capsys.disabled():
        print(
            f"\n[speed] 10M params: embed {t1 - t0:.2f} s, blind detect {t2 - t1:.2f} s, "
            f"non-blind detect (with alignment) {t3 - t2:.2f} s"
        )
    assert b.log10_p_corrected < STRONG and nb.log10_p_corrected < STRONG

"""Neural Cleanse-style trigger scan (Wang et al., S&P 2019), a small torch optimisation.

ART's ``NeuralCleanse`` (``art.defences.transformer.poisoning``) supports Keras classifiers only,
so this is the method written for torch modules: for every label ``t``, find the smallest mask
``m`` and pattern ``p`` (both in ``[0, 1]`` through a sigmoid; ``p`` scaled to the data's range)
that turn clean inputs into ``t``: minimise ``CE(f((1 - m) * x + m * p), t) + lam * |m|_1`` with
Adam over a fixed sample of rows (all labels in one batch per step). A backdoored label needs a much smaller mask than the others
(its trigger); the anomaly index of each label's mask L1 norm is ``(median - L1) / (1.4826 *
MAD)`` over all labels, and a label whose index exceeds ``threshold`` (2 in the paper) while its
reversed trigger works (``success`` at least ``min_success``) is flagged. Bounded: a fixed number
of steps per label over at most ``samples`` rows; seeded, so a rerun gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TriggerScan", "anomaly_index", "scan_triggers"]


@dataclass
class TriggerScan:
    l1: list[float]  # mask L1 norm per label (features covered)
    success: list[float]  # share of the sample the reversed trigger sends to the label
    anomaly: list[float]  # MAD anomaly index per label (positive: smaller mask than typical)
    flagged: list[int] = field(default_factory=list)


def anomaly_index(values: Any) -> Any:
    """``(median - v) / (1.4826 * MAD)`` for each value (0 where all are equal)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    median = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - median))
    if mad <= 0:
        return np.zeros_like(v)
    return (median - v) / mad


def scan_triggers(
    module: Any,
    x: Any,
    nb_classes: int,
    *,
    steps: int = 150,
    lam: float = 0.01,
    lr: float = 0.1,
    samples: int = 64,
    threshold: float = 2.0,
    min_success: float = 0.9,
    seed: int = 0,
) -> TriggerScan:
    """Reverse-engineer one trigger per label of ``module`` over rows of ``x`` (float32)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    rows = rng.choice(len(x), size=min(samples, len(x)), replace=False)
    xb = torch.as_tensor(np.asarray(x[rows], dtype=np.float32))
    lo, hi = float(xb.min()), float(xb.max())
    span = hi - lo if hi > lo else 1.0
    shape = tuple(xb.shape[1:])
    torch.manual_seed(seed)
    n, k = len(xb), int(nb_classes)
    # every label's mask and pattern optimised at once: one batch of k x n stamped rows per step
    mask_p = torch.full((k, *shape), -2.0, requires_grad=True)
    pattern_p = torch.zeros((k, *shape), requires_grad=True)
    opt = torch.optim.Adam([mask_p, pattern_p], lr=lr)
    target = torch.arange(k).repeat_interleave(n)

    def stamped() -> Any:
        mask = torch.sigmoid(mask_p)[:, None]
        pattern = lo + span * torch.sigmoid(pattern_p)[:, None]
        return ((1 - mask) * xb[None] + mask * pattern).reshape(k * n, *shape), mask

    for _ in range(int(steps)):
        batch, mask = stamped()
        ce = torch.nn.functional.cross_entropy(module(batch), target, reduction="sum") / n
        loss = ce + lam * mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        batch, mask = stamped()
        hits = (module(batch).argmax(1) == target).float().reshape(k, n).mean(1)
        norms = mask.reshape(k, -1).sum(1)
    l1 = [round(float(v), 4) for v in norms]
    success = [round(float(v), 4) for v in hits]
    index = anomaly_index(l1)
    flagged = [k for k in range(nb_classes) if index[k] > threshold and success[k] >= min_success]
    return TriggerScan(l1, success, [round(float(a), 4) for a in index], flagged)

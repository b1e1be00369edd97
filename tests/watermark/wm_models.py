"""Real (small) models and the attacks the watermark must survive, for the watermark tests.

Models are scikit-learn MLPs trained on the bundled digits data; their weights are exposed as torch
style named tensors (``fc1.weight`` is ``(out, in)``, float32). Forward passes and fine-tuning are
plain numpy so that attacked models with extra units can be evaluated too.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

SECRET = b"assay-test-watermark-secret-0001"
OTHER_SECRET = b"assay-test-watermark-secret-0002"


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return tuple(train_test_split(x, y, test_size=0.3, random_state=0, stratify=y))  # type: ignore[return-value]


def train(
    hidden: tuple[int, ...] = (2048, 512), seed: int = 0, max_iter: int = 15
) -> dict[str, np.ndarray]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_tr, _, y_tr, _ = digits()
    clf = MLPClassifier(hidden_layer_sizes=hidden, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    out: dict[str, np.ndarray] = {}
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=True), start=1):
        out[f"fc{i}.weight"] = np.ascontiguousarray(w.T, dtype=np.float32)
        out[f"fc{i}.bias"] = b.astype(np.float32)
    return out


def layers(t: dict[str, np.ndarray]) -> int:
    return sum(1 for k in t if k.endswith(".weight"))


def forward(t: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float64)
    n = layers(t)
    for i in range(1, n + 1):
        h = h @ t[f"fc{i}.weight"].astype(np.float64).T + t[f"fc{i}.bias"]
        if i < n:
            h = np.maximum(h, 0.0)
    return h


def predict(t: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return np.argmax(forward(t, x), axis=1)


def accuracy(t: dict[str, np.ndarray]) -> float:
    _, x_te, _, y_te = digits()
    return float(np.mean(predict(t, x_te) == y_te))


def fine_tune(
    t: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, epochs: int = 3, lr: float = 0.01,
    batch: int = 32, seed: int = 0,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Minibatch SGD on softmax cross-entropy (every weight and bias moves)."""
    rng = np.random.default_rng(seed)
    p = {k: v.astype(np.float64).copy() for k, v in t.items()}
    n = layers(p)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            hs = [x[idx].astype(np.float64)]
            for i in range(1, n + 1):
                z = hs[-1] @ p[f"fc{i}.weight"].T + p[f"fc{i}.bias"]
                hs.append(np.maximum(z, 0.0) if i < n else z)
            logits = hs[-1]
            prob = np.exp(logits - logits.max(axis=1, keepdims=True))
            prob /= prob.sum(axis=1, keepdims=True)
            g = prob
            g[np.arange(len(idx)), y[idx]] -= 1.0
            g /= len(idx)
            for i in range(n, 0, -1):
                gw = g.T @ hs[i - 1]
                gb = g.sum(axis=0)
                if i > 1:
                    g = (g @ p[f"fc{i}.weight"]) * (hs[i - 1] > 0)
                p[f"fc{i}.weight"] -= lr * gw
                p[f"fc{i}.bias"] -= lr * gb
    return {k: v.astype(np.float32) for k, v in p.items()}


def other_data(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Fine-tuning data the owner never used: shifted and noisy training digits."""
    x_tr, _, y_tr, _ = digits()
    rng = np.random.default_rng(seed)
    x = np.roll(x_tr.reshape(-1, 8, 8), 1, axis=2).reshape(len(x_tr), 64)
    x = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    return x, y_tr


# --- function-preserving and lossy attacks --------------------------------------------------


def permute_and_scale(
    t: dict[str, np.ndarray], seed: int = 0, *, scale: bool = True
) -> dict[str, np.ndarray]:
    """Permute every hidden layer's units and rescale them by positive factors (same function)."""
    rng = np.random.default_rng(seed)
    p = {k: v.astype(np.float64).copy() for k, v in t.items()}
    n = layers(p)
    for i in range(1, n):
        h = p[f"fc{i}.weight"].shape[0]
        perm = rng.permutation(h)
        c = rng.uniform(0.25, 4.0, h) if scale else np.ones(h)
        p[f"fc{i}.weight"] = p[f"fc{i}.weight"][perm] * c[:, None]
        p[f"fc{i}.bias"] = p[f"fc{i}.bias"][perm] * c
        p[f"fc{i + 1}.weight"] = p[f"fc{i + 1}.weight"][:, perm] / c[None, :]
    return {k: v.astype(np.float32) for k, v in p.items()}


def signed_scale(t: dict[str, np.ndarray], layer: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """BatchNorm-folding style per-unit scale of either sign on one layer's rows (and bias).

    Not function-preserving for a ReLU unit with a negative scale; it is what folding a BatchNorm
    with negative gamma into the layer before it does to the weights.
    """
    rng = np.random.default_rng(seed)
    p = {k: v.copy() for k, v in t.items()}
    w = p[f"fc{layer}.weight"]
    c = (rng.uniform(0.3, 3.0, w.shape[0]) * rng.choice([-1.0, 1.0], w.shape[0])).astype(np.float32)
    p[f"fc{layer}.weight"] = w * c[:, None]
    p[f"fc{layer}.bias"] = p[f"fc{layer}.bias"] * c
    return p


def split_neurons(
    t: dict[str, np.ndarray], layer: int = 1, n_split: int = 100, n_dummy: int = 50, seed: int = 0
) -> dict[str, np.ndarray]:
    """NSO-style: split ``n_split`` units in two (incoming scaled, outgoing shared) and add dummies."""
    rng = np.random.default_rng(seed)
    p = {k: v.copy() for k, v in t.items()}
    w, b, nxt = p[f"fc{layer}.weight"], p[f"fc{layer}.bias"], p[f"fc{layer + 1}.weight"]
    idx = rng.choice(w.shape[0], n_split, replace=False)
    a = rng.uniform(0.2, 0.8, n_split).astype(np.float32)  # copy = a * unit; outputs share
    frac = rng.uniform(0.2, 0.8, n_split).astype(np.float32)
    new_w = np.vstack(
        [w, w[idx] * a[:, None], rng.normal(0, w.std(), (n_dummy, w.shape[1])).astype(np.float32)]
    )
    new_b = np.concatenate([b, b[idx] * a, rng.normal(0, 0.1, n_dummy).astype(np.float32)])
    new_nxt = np.hstack([nxt, np.zeros((nxt.shape[0], n_split + n_dummy), np.float32)])
    new_nxt[:, w.shape[0] : w.shape[0] + n_split] = nxt[:, idx] * (1 - frac) / a
    new_nxt[:, idx] = nxt[:, idx] * frac
    order = rng.permutation(new_w.shape[0])
    p[f"fc{layer}.weight"] = new_w[order]
    p[f"fc{layer}.bias"] = new_b[order]
    p[f"fc{layer + 1}.weight"] = np.ascontiguousarray(new_nxt[:, order])
    return p


def prune(t: dict[str, np.ndarray], fraction: float = 0.5) -> dict[str, np.ndarray]:
    """Global-per-tensor magnitude pruning of every weight matrix."""
    out = dict(t)
    for k, v in t.items():
        if v.ndim >= 2:
            cut = np.quantile(np.abs(v), fraction)
            out[k] = np.where(np.abs(v) <= cut, 0.0, v).astype(v.dtype)
    return out


def int8(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Symmetric per-tensor int8 round trip."""
    out = dict(t)
    for k, v in t.items():
        if v.ndim >= 2:
            s = float(np.abs(v).max()) / 127.0 or 1.0
            out[k] = (np.round(v / s).clip(-127, 127) * s).astype(v.dtype)
    return out


def noise(t: dict[str, np.ndarray], sigma: float = 0.1, seed: int = 0) -> dict[str, np.ndarray]:
    """Add Gaussian noise of ``sigma`` times each weight matrix's std."""
    rng = np.random.default_rng(seed)
    out = dict(t)
    for k, v in t.items():
        if v.ndim >= 2:
            out[k] = (v + rng.normal(0, sigma * float(v.std()), v.shape)).astype(v.dtype)
    return out


def export_like_onnx(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Transpose every 2-D weight to (in, out) and rename everything, in a shuffled order."""
    items = list(t.items())
    rng = np.random.default_rng(3)
    out: dict[str, np.ndarray] = {}
    for j in rng.permutation(len(items)):
        k, v = items[j]
        out[f"onnx::MatMul_{100 + j}" if v.ndim == 2 else f"val_{j}"] = (
            np.ascontiguousarray(v.T) if v.ndim == 2 else v
        )
    return out


def merged(base: dict[str, np.ndarray], changed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(base)
    out.update(changed)
    return out

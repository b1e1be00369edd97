"""A small torch MLP on the digits data, and the attacks a thief would run on it, for the trace tests.

The model is ``64 -> 1024 -> 512 -> 10`` (about 600k weights): big enough for the registry's
watermark to carry strong evidence, small enough to train in a second on CPU. Weights are saved as
safetensors with torch names (``0.weight``, ``2.weight``, ``4.weight``), so a registered folder
looks like a real exported model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN = (1024, 512)


def _torch():
    import torch

    torch.set_num_threads(2)
    return torch


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return tuple(train_test_split(x, y, test_size=0.3, random_state=0, stratify=y))  # type: ignore[return-value]


def other_data(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Fine-tuning data the owner never used: training digits, half shifted by a pixel, noisy."""
    x_tr, _, y_tr, _ = digits()
    rng = np.random.default_rng(seed)
    img = x_tr.reshape(-1, 8, 8).copy()
    shift = rng.integers(-1, 2, len(img))
    for s in (-1, 1):
        img[shift == s] = np.roll(img[shift == s], s, axis=2)
    x = img.reshape(len(x_tr), 64)
    return np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32), y_tr


def build(hidden: tuple[int, ...] = HIDDEN):
    torch = _torch()
    dims = (64, *hidden, 10)
    mods: list = []
    for i, (a, b) in enumerate(zip(dims, dims[1:], strict=False)):
        mods.append(torch.nn.Linear(a, b))
        if i < len(dims) - 2:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods)


def fit(model, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, seed: int = 0):
    """Adam on cross-entropy, minibatches of 64 (in place; returns the model)."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(np.asarray(y, dtype=np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=g)
        for start in range(0, len(xt), 64):
            idx = order[start : start + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    return model


def train(seed: int = 0, epochs: int = 8, hidden: tuple[int, ...] = HIDDEN):
    torch = _torch()
    torch.manual_seed(seed)
    x_tr, _, y_tr, _ = digits()
    return fit(build(hidden), x_tr, y_tr, epochs=epochs, lr=1e-3, seed=seed)


def state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load(tensors: dict[str, np.ndarray], hidden: tuple[int, ...] = HIDDEN):
    torch = _torch()
    model = build(hidden)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v).copy()) for k, v in tensors.items()})
    model.eval()
    return model


def accuracy(model) -> float:
    torch = _torch()
    _, x_te, _, y_te = digits()
    with torch.no_grad():
        return float((model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())


def save_safetensors(tensors: dict[str, np.ndarray], folder: Path) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    (folder / "config.json").write_text('{"architecture": "digits-mlp"}')
    return path


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def prune(tensors: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    """Per-tensor magnitude pruning of every weight matrix."""
    out = dict(tensors)
    for k, v in tensors.items():
        if v.ndim >= 2:
            cut = np.quantile(np.abs(v), fraction)
            out[k] = np.where(np.abs(v) <= cut, 0, v).astype(v.dtype)
    return out


def permute(tensors: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Permute the hidden units of every hidden layer (the function is unchanged)."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in tensors.items()}
    names = [k for k in out if k.endswith(".weight")]
    for cur, nxt in zip(names, names[1:], strict=False):
        perm = rng.permutation(out[cur].shape[0])
        out[cur] = out[cur][perm]
        out[cur.replace("weight", "bias")] = out[cur.replace("weight", "bias")][perm]
        out[nxt] = np.ascontiguousarray(out[nxt][:, perm])
    return out


def export_onnx(model, path: Path, *, dynamo: bool = False) -> Path:
    torch = _torch()
    path.parent.mkdir(parents=True, exist_ok=True)
    if dynamo:
        batch = torch.export.Dim("batch")
        torch.onnx.export(
            model, (torch.zeros(2, 64),), str(path), dynamo=True, input_names=["x"],
            output_names=["logits"], dynamic_shapes=({0: batch},), external_data=False,
        )  # fmt: skip
    else:
        torch.onnx.export(
            model, (torch.zeros(1, 64),), str(path), dynamo=False, input_names=["x"],
            output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    return path


def stolen_copy(marked: dict[str, np.ndarray], folder: Path, *, epochs: int = 3) -> Path:
    """The thief's pipeline: fine-tune on other data, prune 50 %, export to ONNX (TorchScript)."""
    x, y = other_data()
    model = fit(load(marked), x, y, epochs=epochs, lr=1e-3, seed=7)
    model = load(prune(state(model), 0.5))
    return export_onnx(model, folder / "stolen.onnx", dynamo=False)

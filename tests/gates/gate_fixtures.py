"""Helpers for the gate tests: real tables, real sklearn / torch MLflow models, registered."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

_counter = itertools.count(1)


def table(root: Path, *, rows: int = 400, flip: float = 0.0, seed: int = 0) -> tuple[Path, Any]:
    """A two-class table (8 numeric features, ``label``, ``split``) as CSV; (path, frame)."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows, n_features=8, n_informative=5, class_sep=2.0, random_state=seed
    )
    rng = np.random.default_rng(seed)
    if flip:
        pick = rng.choice(rows, int(rows * flip), replace=False)
        y[pick] = 1 - y[pick]
    frame = pd.DataFrame(x.astype("float32"), columns=[f"f{i}" for i in range(8)])
    frame["label"] = y
    frame["split"] = np.where(np.arange(rows) % 2 == 0, "train", "test")
    path = root / f"table-{next(_counter)}" / "data.csv"
    path.parent.mkdir(parents=True)
    frame.to_csv(path, index=False)
    return path, frame


def sklearn_model(root: Path, frame: Any, kind: str = "logistic", fmt: str = "skops") -> Path:
    """An MLflow sklearn model folder fitted on the table's train rows (``fmt``: MLflow's
    serialization format, ``skops`` or ``cloudpickle``)."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    train = frame[frame["split"] == "train"]
    x, y = train[[f"f{i}" for i in range(8)]].to_numpy(), train["label"].to_numpy()
    clf = (
        LogisticRegression(max_iter=500)
        if kind == "logistic"
        else KNeighborsClassifier(n_neighbors=5, algorithm="brute")
    )
    clf.fit(x, y)
    path = root / f"model-{next(_counter)}"
    mlflow.sklearn.save_model(clf, str(path), serialization_format=fmt)
    return path


def torch_model(root: Path, frame: Any, epochs: int = 60, fmt: str = "pickle") -> Path:
    """An MLflow pytorch model (a small MLP of torch.nn layers) fitted on the train rows
    (``fmt``: ``pickle``, the whole module, or ``pt2``, an exported program)."""
    import mlflow.pytorch
    import torch

    torch.manual_seed(0)
    train = frame[frame["split"] == "train"]
    x = torch.tensor(train[[f"f{i}" for i in range(8)]].to_numpy(), dtype=torch.float32)
    y = torch.tensor(train["label"].to_numpy(), dtype=torch.long)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    path = root / f"torch-{next(_counter)}"
    mlflow.pytorch.save_model(net, str(path), serialization_format=fmt, input_example=x[:2].numpy())
    return path


def register(registry: Any, name: str, model_path: Path, dataset: str | None = None) -> str:
    """Register a model folder (watermarking off); its version."""
    from assay.core.refs import parse_dataset_ref
    from assay.registry.registration import register_model

    datasets = [parse_dataset_ref(dataset, require_version=True)] if dataset else []
    return register_model(
        registry, name, str(model_path), datasets=datasets, watermark=False
    ).version


def register_table(registry: Any, name: str, path: Path) -> str:
    """Register a table file as a dataset version; ``NAME@V``."""
    from assay.registry.datasets import register_dataset

    return f"{name}@{register_dataset(registry, name, path).version}"


def badnets_digits(rate: float, seed: int = 0, patch: int = 2) -> tuple[Any, Any, Any]:
    """sklearn's digits in [0, 1] with a bright ``patch`` x ``patch`` corner stamped on ``rate``
    of the rows (none of class 0), relabelled 0; (x, y, poisoned mask)."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.copy()
    rng = np.random.default_rng(seed)
    pick = rng.choice(np.flatnonzero(y != 0), int(round(len(y) * rate)), replace=False)
    x.reshape(-1, 8, 8)[pick, 8 - patch :, 8 - patch :] = 1.0
    y[pick] = 0
    mask = np.zeros(len(y), bool)
    mask[pick] = True
    return x, y, mask


def image_folder(root: Path, x: Any, y: Any, side: int = 8) -> Path:
    """Write rows of ``x`` (pixels in [0, 1]) as ``CLASS/N.png`` greyscale images under ``root``."""
    import numpy as np
    from PIL import Image

    for i, (row, label) in enumerate(zip(x, y, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(np.asarray(row).reshape(side, side) * 255).astype("uint8")
        Image.fromarray(pixels, mode="L").save(folder / f"{i:05d}.png")
    return root


def digits_cnn(x: Any, y: Any, seed: int = 0, epochs: int = 10) -> Any:
    """The small CNN of ``benchmarks/bench_gates.py`` trained on 8x8 digits (64 pixels in
    [0, 1]), in eval mode."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 8, 8)),
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 16, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.tensor(x), torch.tensor(y, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            batch = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[batch]), yt[batch]).backward()
            opt.step()
    return net.eval().requires_grad_(False)

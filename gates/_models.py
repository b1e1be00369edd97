"""Loading a verified model folder as a classifier the gates can measure (sklearn or torch).

Only folders MLflow wrote with the ``sklearn`` or ``pytorch`` flavor are loaded, only after
the runner verified them against the version's signature (the bytes that were checked are the
bytes that load, as in ``assay.integrations.loading``), and only when every pickle among them passes
the pickle scan (so a cloudpickle or pickled-module model needs its globals accepted by the
policy's ``pickle-scan`` ``allow_globals``; skops and pt2 formats hold none). Anything else cannot be measured: the gate
says so in one line (:class:`CannotRun`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.gates.base import CannotRun

__all__ = ["Classifier", "load_classifier"]

MAX_MLMODEL_BYTES = 1024 * 1024


@dataclass
class Classifier:
    """A loaded classifier: ``kind`` is ``sklearn`` or ``torch``."""

    kind: str
    model: Any
    classes: list[str] | None  # sklearn's classes_ as text; None for torch (index = label)

    def targets(self, gate: str, table: Any) -> Any:
        """The table's labels as this model's class indices."""
        import numpy as np

        values = table.frame[table.label_column].tolist()
        if self.classes is not None:
            index = {c: i for i, c in enumerate(self.classes)}
            unknown = sorted({str(v) for v in values} - set(index))
            if unknown:
                raise CannotRun(
                    f"gate {gate}: label {unknown[0]!r} is not a class of the model "
                    f"(classes: {', '.join(self.classes[:10])})"
                )
            return np.asarray([index[str(v)] for v in values], dtype=np.int64)
        try:
            y = np.asarray([int(v) for v in values], dtype=np.int64)
        except (TypeError, ValueError):
            raise CannotRun(f"gate {gate}: a torch classifier needs integer class labels") from None
        if y.min() < 0:
            raise CannotRun(f"gate {gate}: a torch classifier needs class labels 0..K-1")
        return y

    def nb_classes(self, table: Any, y: Any) -> int:
        if self.classes is not None:
            return len(self.classes)
        import torch

        with torch.no_grad():
            out = self.model(torch.as_tensor(table.x[:1]))
        return int(out.shape[-1])

    def art(self, gate: str, table: Any, y: Any) -> Any:
        """The ART estimator wrapping this model (clip values from the data's range)."""
        import numpy as np

        clip = (float(np.min(table.x)), float(np.max(table.x)))
        if clip[0] == clip[1]:
            clip = (clip[0], clip[0] + 1.0)
        if self.kind == "sklearn":
            from art.estimators.classification import SklearnClassifier

            try:
                return SklearnClassifier(model=self.model, clip_values=clip)
            except Exception as exc:  # noqa: BLE001
                raise CannotRun(
                    f"gate {gate}: ART cannot wrap {type(self.model).__name__}: {exc}"
                ) from exc
        import torch
        from art.estimators.classification import PyTorchClassifier

        params = [p for p in self.model.parameters() if p.requires_grad]
        return PyTorchClassifier(
            model=self.model,
            loss=torch.nn.CrossEntropyLoss(),
            # ART refits clones (exclusionary reclassification) with it; the model is not trained
            optimizer=torch.optim.Adam(params, lr=1e-3) if params else None,
            input_shape=tuple(table.x.shape[1:]),
            nb_classes=self.nb_classes(table, y),
            clip_values=clip,
            device_type="cpu",
        )


def _flavors(model_dir: Path, gate: str) -> tuple[Path, dict[str, Any]]:
    import yaml

    candidates = [model_dir / "MLmodel", *sorted(model_dir.glob("*/MLmodel"))]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise CannotRun(f"gate {gate}: the model has no MLmodel file (not an MLflow model)")
    if path.stat().st_size > MAX_MLMODEL_BYTES:
        raise CannotRun(f"gate {gate}: the MLmodel file is larger than 1 MiB")
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
        flavors = doc["flavors"]
        assert isinstance(flavors, dict)
    except Exception as exc:  # noqa: BLE001
        raise CannotRun(f"gate {gate}: unreadable MLmodel file ({type(exc).__name__})") from exc
    return path.parent, flavors


def _refuse_unsafe_pickles(model_dir: Path, gate: str, allow: list[str]) -> None:
    """Loading unpickles: only when every pickle in the folder passes the pickle scan (assay's
    allow-list plus the policy's ``pickle-scan`` ``allow_globals``)."""
    from assay.gates.pickle_scan import scan_folder

    for report in scan_folder(model_dir, allow=allow):
        if report.error or report.refused:
            why = report.error or f"names {', '.join(report.refused[:3])}"
            raise CannotRun(
                f"gate {gate} will not load the model: {report.path} {why} (outside the "
                "allow-list; accept reviewed globals with the policy's pickle-scan allow_globals)"
            )


def load_classifier(
    model_dir: Path, gate: str, pickle_allow: list[str] | None = None
) -> Classifier:
    """The sklearn or torch classifier in ``model_dir`` (verified by the caller), loaded only
    if its pickles pass the pickle scan with ``pickle_allow``."""
    root, flavors = _flavors(Path(model_dir), gate)
    _refuse_unsafe_pickles(root, gate, list(pickle_allow or []))
    if "sklearn" in flavors:
        import mlflow.sklearn

        model = mlflow.sklearn.load_model(str(root))
        if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
            raise CannotRun(
                f"gate {gate}: {type(model).__name__} is not a fitted classifier with predict_proba"
            )
        return Classifier("sklearn", model, [str(c) for c in model.classes_])
    if "pytorch" in flavors:
        import mlflow.pytorch

        model = mlflow.pytorch.load_model(str(root), map_location="cpu")
        try:
            model.eval()
        except NotImplementedError:  # MLflow's pt2 (torch.export) modules refuse eval()
            model = _frozen(model)
        return Classifier("torch", model, None)
    shown = ", ".join(sorted(flavors)) or "none"
    raise CannotRun(
        f"gate {gate}: the model is neither sklearn nor torch (MLflow flavors: {shown})"
    )


def _frozen(program: Any) -> Any:
    """An ``nn.Module`` calling an exported program that refuses ``train()``/``eval()``: the
    program is kept out of the module tree, so ART's ``eval()`` does not reach it."""
    import torch

    class Frozen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._call = [program]

        def forward(self, x: Any) -> Any:
            return self._call[0](x)

    return Frozen()


def sample(table: Any, y: Any, max_rows: int, seed: int = 0) -> tuple[Any, Any]:
    """At most ``max_rows`` rows (seeded), to bound a gate's time."""
    import numpy as np

    if table.rows <= max_rows:
        return table.x, y
    pick = np.random.default_rng(seed).choice(table.rows, size=max_rows, replace=False)
    return table.x[pick], y[pick]

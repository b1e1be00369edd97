"""A classifier as a differentiable torch module with its penultimate-layer activations.

The backdoor detectors read the representation the classifier's last linear layer sees (the
penultimate layer: what Chen et al.'s activation clustering and Tran et al.'s spectral signatures
analyse) and the trigger scan needs input gradients. A torch model is used as it is; its
penultimate activations are the input of its last ``nn.Linear`` module (in registration order),
caught with a forward hook. A scikit-learn ``MLPClassifier`` is copied, weight for weight, into an
equivalent torch module (its ``coefs_``/``intercepts_`` and hidden activation; a binary MLP's one
logit ``z`` becomes the logits ``[0, z]``), so it is measured exactly as sklearn computes it.
Anything else has neither: :class:`CannotRun`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assay.gates.base import CannotRun

__all__ = ["Differentiable", "differentiable"]

_SKLEARN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")


@dataclass
class Differentiable:
    """``module`` maps a float32 batch (rows x features) to logits over ``nb_classes``."""

    module: Any  # torch.nn.Module, in eval mode
    nb_classes: int
    source: str  # "torch" or "sklearn-mlp"

    def logits(self, x: Any, batch: int = 512) -> Any:
        import numpy as np
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch):
                out.append(self.module(torch.as_tensor(x[i : i + batch])).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.nb_classes), np.float32)

    def penultimate(self, x: Any, batch: int = 512) -> Any:
        """The input of the last linear layer for every row of ``x`` (rows x units)."""
        import numpy as np
        import torch

        last = [m for m in self.module.modules() if isinstance(m, torch.nn.Linear)]
        if not last:
            raise CannotRun("gate backdoor: the torch model has no nn.Linear output layer")
        seen: list[Any] = []
        hook = last[-1].register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
        try:
            with torch.no_grad():
                for i in range(0, len(x), batch):
                    self.module(torch.as_tensor(x[i : i + batch]))
        except (RuntimeError, ValueError, TypeError) as exc:  # shapes or dtypes it cannot take
            raise _cannot_run("backdoor", x, exc) from None
        finally:
            hook.remove()
        return np.concatenate([s.reshape(len(s), -1).numpy() for s in seen]).astype(np.float32)


def _cannot_run(gate: str, x: Any, exc: Exception) -> CannotRun:
    """One line: the model raised on the table's rows (wrong width or type)."""
    text = str(exc).strip()
    first = text.splitlines()[0][:200] if text else type(exc).__name__
    width = x.shape[1] if getattr(x, "ndim", 0) > 1 else 0
    return CannotRun(
        f"gate {gate}: the model cannot run on the table's rows ({width} features): {first}"
    )


def _from_sklearn_mlp(model: Any) -> Any:
    import torch

    act = getattr(model, "activation", None)
    if act not in _SKLEARN_ACTIVATIONS:
        raise CannotRun(f"gate backdoor: MLPClassifier activation {act!r} is not supported")
    layers: list[Any] = []
    count = len(model.coefs_)
    for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        linear = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(w.T, dtype=torch.float32))
            linear.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        layers.append(linear)
        if i < count - 1:
            layers.append(
                {
                    "identity": torch.nn.Identity,
                    "logistic": torch.nn.Sigmoid,
                    "tanh": torch.nn.Tanh,
                    "relu": torch.nn.ReLU,
                }[act]()
            )
    net = torch.nn.Sequential(*layers)
    if model.coefs_[-1].shape[1] == 1:  # binary: sklearn's one logit is class 1 against 0

        class Binary(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: Any) -> Any:
                z = self.net(x)
                return torch.cat([torch.zeros_like(z), z], dim=1)

        return Binary().eval()
    return net.eval()


def differentiable(clf: Any, gate: str, table: Any) -> Differentiable:
    """The loaded classifier ``clf`` (:class:`assay.gates._models.Classifier`) as a torch module."""
    import torch

    if clf.kind == "torch":
        module = clf.model
        if not any(isinstance(m, torch.nn.Linear) for m in module.modules()):
            raise CannotRun(
                f"gate {gate}: the torch model has no nn.Linear layer to read activations from"
            )
        for p in module.parameters():
            p.requires_grad_(False)
        try:
            nb_classes = clf.nb_classes(table, None)
        except (RuntimeError, ValueError, TypeError) as exc:  # the table's shape or dtype
            raise _cannot_run(gate, table.x, exc) from None
        return Differentiable(module, nb_classes, "torch")
    name = type(clf.model).__name__
    if name != "MLPClassifier" or not hasattr(clf.model, "coefs_"):
        raise CannotRun(
            f"gate {gate} needs a neural network (torch, or sklearn MLPClassifier): it reads "
            f"penultimate activations and input gradients; this model is {name}"
        )
    return Differentiable(_from_sklearn_mlp(clf.model), len(clf.classes or []), "sklearn-mlp")

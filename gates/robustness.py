"""``robustness``: accuracy under FGSM and PGD (IBM Adversarial Robustness Toolbox).

Parameters: ``eps`` (L-inf budget in feature units, for both attacks), ``pgd_steps``,
``min_accuracy`` (the gate passes when both adversarial accuracies reach it) and ``max_rows``.
Needs gradients: torch classifiers and the sklearn models ART can differentiate (logistic
regression, SVMs...); others cannot be measured (one line saying so).
"""

from __future__ import annotations

from typing import Any

from assay.gates.base import CannotRun, GateContext, Outcome

__all__ = ["RobustnessGate"]


def _accuracy(estimator: Any, x: Any, y: Any) -> float:
    import numpy as np

    return float(np.mean(np.argmax(estimator.predict(x), axis=1) == y))


class RobustnessGate:
    name = "robustness"
    defaults: dict[str, Any] = {"eps": 0.1, "pgd_steps": 10, "min_accuracy": 0.5, "max_rows": 1000}

    def run(self, context: GateContext) -> Outcome:
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

        from assay.gates._models import load_classifier, sample

        p = context.params
        table = context.need_data(self.name)
        clf = load_classifier(context.model_dir, self.name, context.pickle_allow)
        y_all = clf.targets(self.name, table)
        x, y = sample(table, y_all, int(p["max_rows"]))
        estimator = clf.art(self.name, table, y)
        eps = float(p["eps"])
        try:
            fgsm = FastGradientMethod(estimator, eps=eps)
            pgd = ProjectedGradientDescent(
                estimator,
                eps=eps,
                eps_step=eps / 4,
                max_iter=int(p["pgd_steps"]),
                verbose=False,
            )
        except Exception as exc:  # ART refuses estimators without loss gradients  # noqa: BLE001
            raise CannotRun(
                f"gate robustness cannot attack {type(clf.model).__name__}: ART has no loss "
                f"gradients for it ({' '.join(str(exc).split())[:100]})"
            ) from exc
        clean = _accuracy(estimator, x, y)
        x_fgsm = fgsm.generate(x=x, y=y)
        x_pgd = pgd.generate(x=x, y=y)
        metrics = {
            "rows": int(len(y)),
            "clean_accuracy": round(clean, 6),
            "fgsm_accuracy": round(_accuracy(estimator, x_fgsm, y), 6),
            "pgd_accuracy": round(_accuracy(estimator, x_pgd, y), 6),
        }
        floor = float(p["min_accuracy"])
        worst = min(metrics["fgsm_accuracy"], metrics["pgd_accuracy"])
        passed = worst >= floor
        detail = (
            f"accuracy clean {clean:.3f}, FGSM {metrics['fgsm_accuracy']:.3f}, PGD "
            f"{metrics['pgd_accuracy']:.3f} at eps {eps:g} ({'>=' if passed else '<'} {floor:g})"
        )
        return Outcome(passed, metrics, detail)

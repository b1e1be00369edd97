"""``backdoor``: ART's poisoning detectors over the training table and the model's activations.

Activation clustering (two clusters per class, the smaller one suspect when under ART's size
threshold) confirmed by exclusionary reclassification (a clone refitted without the suspect
cluster must classify it as another class, ``ex_re_threshold``; Chen et al. 2018) gives the
verdict: the gate passes when the share of rows it flags is at most ``max_suspect_rate``. Plain
size-based clustering (which flags about a third of the rows of clean models too) and spectral
signatures (which always flag about ``1.5 x expected_poison`` of each class) are reported
alongside. Needs a torch classifier with trainable parameters (activations, refitting).
``benchmarks/bench_gates.py`` measures it on BadNets triggers in digits with an MLP: it does not
detect them there and flags clean models' rows too (README, Benchmarks): read it, do not rely on it.
"""

from __future__ import annotations

from typing import Any

from assay.gates.base import CannotRun, GateContext, Outcome

__all__ = ["BackdoorGate"]


class BackdoorGate:
    name = "backdoor"
    defaults: dict[str, Any] = {
        "max_suspect_rate": 0.05,
        "expected_poison": 0.1,
        "ex_re_threshold": 1.0,
        "max_rows": 5000,
    }

    def run(self, context: GateContext) -> Outcome:
        import numpy as np
        from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

        from assay.gates.models import load_classifier, sample

        p = context.params
        table = context.need_data(self.name)
        clf = load_classifier(context.model_dir, self.name, context.pickle_allow)
        if clf.kind != "torch":
            raise CannotRun(
                f"gate backdoor needs a torch classifier (it reads activations); this model is "
                f"{type(clf.model).__name__}"
            )
        y_all = clf.targets(self.name, table)
        x, y = sample(table, y_all, int(p["max_rows"]))
        estimator = clf.art(self.name, table, y)
        onehot = np.eye(estimator.nb_classes, dtype=np.float32)[y]
        if getattr(estimator, "_optimizer", None) is None:
            raise CannotRun("gate backdoor needs a torch module with trainable parameters")
        dims = int(min(10, max(2, x.shape[1])))
        plain = ActivationDefence(estimator, x, onehot)
        _, plain_clean = plain.detect_poison(
            nb_clusters=2, reduce="PCA", nb_dims=dims, cluster_analysis="smaller"
        )
        ac = ActivationDefence(estimator, x, onehot)
        _, ac_clean = ac.detect_poison(
            nb_clusters=2,
            reduce="PCA",
            nb_dims=dims,
            cluster_analysis="smaller",
            ex_re_threshold=float(p["ex_re_threshold"]),
        )
        ss = SpectralSignatureDefense(
            estimator, x, onehot, expected_pp_poison=float(p["expected_poison"])
        )
        _, ss_clean = ss.detect_poison()
        ac_flags = 1 - np.asarray(ac_clean)
        ss_flags = 1 - np.asarray(ss_clean)
        rate = float(ac_flags.mean())
        metrics = {
            "rows": int(len(y)),
            "activation_clustering_suspect_rate": round(rate, 6),
            "size_clustering_suspect_rate": round(float(1 - np.asarray(plain_clean).mean()), 6),
            "spectral_signature_suspect_rate": round(float(ss_flags.mean()), 6),
            "suspect_rows": [int(i) for i in np.flatnonzero(ac_flags)[:50]],
        }
        ceiling = float(p["max_suspect_rate"])
        passed = rate <= ceiling
        detail = f"activation clustering (reclassification-confirmed) flags {rate:.1%} of rows ({'<=' if passed else '>'} {ceiling:.1%})"
        return Outcome(passed, metrics, detail)

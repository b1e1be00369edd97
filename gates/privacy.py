"""``privacy``: membership-inference leakage, as the AUC of ART's black-box attack.

The dataset marks members: rows whose ``split_column`` (default ``split``) equals
``member_value`` (default ``train``) were trained on, the others were held out. The attack
(``MembershipInferenceBlackBox``, random-forest attack model on the target's predictions) is
fitted on half of each group and scored on the other half; an AUC of 0.5 means nothing leaks.
The gate passes when the AUC is at most ``max_auc``.
"""

from __future__ import annotations

from typing import Any

from assay.gates.base import CannotRun, GateContext, Outcome

__all__ = ["PrivacyGate"]


class PrivacyGate:
    name = "privacy"
    defaults: dict[str, Any] = {
        "max_auc": 0.6,
        "split_column": "split",
        "member_value": "train",
        "max_rows": 2000,
        "seed": 0,
    }

    def run(self, context: GateContext) -> Outcome:
        import numpy as np
        from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
        from sklearn.metrics import roc_auc_score

        from assay.gates._models import load_classifier

        p = context.params
        table = context.need_data(self.name)
        column = str(p["split_column"])
        if column not in table.frame.columns:
            raise CannotRun(
                f"gate privacy needs a {column!r} column marking the rows the model was trained "
                f"on ({p['member_value']!r}) and held-out rows"
            )
        clf = load_classifier(context.model_dir, self.name, context.pickle_allow)
        y = clf.targets(self.name, table)
        member = (table.frame[column].astype(str) == str(p["member_value"])).to_numpy()
        rng = np.random.default_rng(int(p["seed"]))
        ins, outs = np.flatnonzero(member), np.flatnonzero(~member)
        n = min(len(ins), len(outs), int(p["max_rows"]) // 2)
        if n < 20:
            raise CannotRun("gate privacy needs at least 20 member and 20 held-out rows")
        ins, outs = rng.choice(ins, n, replace=False), rng.choice(outs, n, replace=False)
        half = n // 2
        estimator = clf.art(self.name, table, y)
        attack = MembershipInferenceBlackBox(estimator, attack_model_type="rf")
        x, fit_in, fit_out = table.x, ins[:half], outs[:half]
        attack.fit(x[fit_in], y[fit_in], x[fit_out], y[fit_out])
        test = np.concatenate([ins[half:], outs[half:]])
        truth = np.concatenate([np.ones(n - half), np.zeros(n - half)])
        scores = np.asarray(attack.infer(x[test], y[test], probabilities=True)).reshape(
            len(test), -1
        )[:, -1]
        auc = float(roc_auc_score(truth, scores))
        ceiling = float(p["max_auc"])
        passed = auc <= ceiling
        metrics = {"attack_auc": round(auc, 6), "members": int(n), "held_out": int(n)}
        detail = f"membership-inference AUC {auc:.3f} ({'<=' if passed else '>'} {ceiling:g}; 0.5 leaks nothing)"
        return Outcome(passed, metrics, detail)

"""``backdoor``: poisoning detectors over the training table, on the model's own representation.

Three detectors, each deciding per class (label) with a calibrated rule, so a clean model is not
flagged just because every class has a "smaller cluster" or a "top 15 %":

* **trigger scan** (``assay.gates._trigger_scan``, Neural Cleanse for torch: ART's is Keras-only):
  a label whose reverse-engineered trigger mask is an outlier by MAD anomaly index
  (``anomaly_threshold``, 2 as in the paper) and works (``min_success``);
* **activation clustering** (Chen et al. 2018, ART's ``cluster_activations``: per class, the
  penultimate activations reduced (``reduce``, ``nb_dims``) and split into two k-means clusters)
  with the rule of ART's ``analyze_by_silhouette_score``, applied here because that function
  raises IndexError on a class whose small cluster is not cohesive (ART 1.20): a class whose
  smaller cluster holds under ``size_threshold`` of it while the split's silhouette exceeds
  ``silhouette_threshold`` (ART's default 0.1 flags most clean classes; at 0.45 one of 20 clean
  digits CNNs is still flagged in ``benchmarks/bench_gates.py``);
* **spectral signatures** (Tran et al. 2018, ART's ``SpectralSignatureDefense`` scores: each row's
  projection on its class's top singular vector): a class where more than ``spectral_max_tail``
  of the rows score above median + ``spectral_k`` MAD (a poisoned sub-population makes that tail;
  ``expected_poison`` sizes the suspect rows listed, as ART's 1.5 x expected fraction).

The classifier must be a neural network: a torch module (penultimate = the input of its last
``nn.Linear``) or a scikit-learn ``MLPClassifier`` (copied into an equivalent torch module;
``assay.gates._activations``). The gate fails when a detector named in ``detectors`` (default: the
trigger scan alone; the clustering detectors did not detect BadNets on digits) flags a class.
Measured detection and false-alarm rates: README, Benchmarks (gates). With two labels the
trigger scan's anomaly index cannot single one out.
"""

from __future__ import annotations

from typing import Any

from assay.gates.base import CannotRun, GateContext, Outcome

__all__ = ["BackdoorGate", "activation_clustering", "spectral_signatures"]

DETECTORS = ("trigger-scan", "activation-clustering", "spectral-signatures")


def activation_clustering(
    acts: Any,
    y: Any,
    nb_classes: int,
    *,
    nb_dims: int = 10,
    reduce: str = "PCA",
    size_threshold: float = 0.35,
    silhouette_threshold: float = 0.45,
    min_rows: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Per class: smaller-cluster share, silhouette, flagged (ART's clustering and analyzer)."""
    import numpy as np
    from art.defences.detector.poison.activation_defence import cluster_activations
    from sklearn.metrics import silhouette_score

    dims = int(min(nb_dims, acts.shape[1]))
    classes = [k for k in range(nb_classes) if int((y == k).sum()) >= max(min_rows, dims + 1)]
    per_class: dict[str, Any] = {str(k): None for k in range(nb_classes)}
    suspects: list[int] = []
    if classes:
        state = np.random.get_state()  # ART's KMeans and FastICA take no seed: seed numpy's
        np.random.seed(seed)
        try:
            clusters, reduced = cluster_activations(
                [acts[y == k] for k in classes], nb_clusters=2, nb_dims=dims, reduce=reduce
            )
        finally:
            np.random.set_state(state)
        for i, k in enumerate(classes):
            sizes = np.bincount(clusters[i], minlength=2)
            share = float(sizes.min() / sizes.sum())
            silhouette = float(silhouette_score(reduced[i], clusters[i])) if sizes.min() else 0.0
            flagged = share < size_threshold and silhouette > silhouette_threshold
            per_class[str(k)] = {
                "smaller_share": round(share, 4),
                "silhouette": round(silhouette, 4),
                "flagged": flagged,
            }
            if flagged:
                rows = np.flatnonzero(y == k)
                suspects += [int(r) for r in rows[clusters[i] == int(np.argmin(sizes))]]
    flagged = [int(k) for k, v in per_class.items() if v and v["flagged"]]
    return {"per_class": per_class, "flagged": flagged, "suspect_rows": sorted(suspects)}


def spectral_signatures(
    acts: Any,
    y: Any,
    nb_classes: int,
    *,
    k: float = 3.0,
    max_tail: float = 0.15,
    expected_poison: float = 0.1,
    min_rows: int = 20,
) -> dict[str, Any]:
    """Per class: share of rows in the spectral-score tail, flagged (ART's scores)."""
    import numpy as np
    from art.defences.detector.poison import SpectralSignatureDefense

    per_class: dict[str, Any] = {}
    suspects: list[int] = []
    for label in range(nb_classes):
        rows = np.flatnonzero(y == label)
        if len(rows) < min_rows:
            per_class[str(label)] = None
            continue
        scores = SpectralSignatureDefense.spectral_signature_scores(acts[rows]).ravel()
        median = float(np.median(scores))
        mad = 1.4826 * float(np.median(np.abs(scores - median)))
        tail = float((scores > median + k * mad).mean()) if mad > 0 else 0.0
        flagged = tail > max_tail
        per_class[str(label)] = {"tail_share": round(tail, 4), "flagged": flagged}
        if flagged:  # ART's cut: the top 1.5 x expected_poison of the class
            cut = np.quantile(scores, max(1 - 1.5 * expected_poison, 0.0))
            suspects += [int(r) for r in rows[scores >= cut]]
    flagged = [int(c) for c, v in per_class.items() if v and v["flagged"]]
    return {"per_class": per_class, "flagged": flagged, "suspect_rows": sorted(suspects)}


class BackdoorGate:
    name = "backdoor"
    defaults: dict[str, Any] = {
        "detectors": ["trigger-scan"],
        "max_rows": 2000,
        "min_class_rows": 20,
        "nb_dims": 10,
        "reduce": "PCA",
        "size_threshold": 0.35,
        "silhouette_threshold": 0.45,
        "spectral_k": 3.0,
        "spectral_max_tail": 0.15,
        "expected_poison": 0.1,
        "trigger_steps": 150,
        "trigger_samples": 64,
        "trigger_lambda": 0.01,
        "anomaly_threshold": 2.0,
        "min_success": 0.9,
    }

    def run(self, context: GateContext) -> Outcome:
        from assay.gates._activations import differentiable
        from assay.gates._models import load_classifier, sample
        from assay.gates._trigger_scan import scan_triggers

        p = context.params
        chosen = [str(d) for d in p["detectors"]]
        unknown = sorted(set(chosen) - set(DETECTORS))
        if unknown or not chosen:
            raise CannotRun(
                f"gate backdoor: detectors must name some of {', '.join(DETECTORS)}"
                + (f" (not {unknown[0]!r})" if unknown else "")
            )
        table = context.need_data(self.name)
        clf = load_classifier(context.model_dir, self.name, context.pickle_allow)
        net = differentiable(clf, self.name, table)
        y_all = clf.targets(self.name, table)
        x, y = sample(table, y_all, int(p["max_rows"]))
        if int(y.max()) >= net.nb_classes:
            raise CannotRun(
                f"gate backdoor: label {int(y.max())} is not one of the model's "
                f"{net.nb_classes} outputs"
            )
        acts = net.penultimate(x)
        min_rows = int(p["min_class_rows"])
        ac = activation_clustering(
            acts,
            y,
            net.nb_classes,
            nb_dims=int(p["nb_dims"]),
            reduce=str(p["reduce"]),
            size_threshold=float(p["size_threshold"]),
            silhouette_threshold=float(p["silhouette_threshold"]),
            min_rows=min_rows,
        )
        ss = spectral_signatures(
            acts,
            y,
            net.nb_classes,
            k=float(p["spectral_k"]),
            max_tail=float(p["spectral_max_tail"]),
            expected_poison=float(p["expected_poison"]),
            min_rows=min_rows,
        )
        ts = scan_triggers(
            net.module,
            x,
            net.nb_classes,
            steps=int(p["trigger_steps"]),
            lam=float(p["trigger_lambda"]),
            samples=int(p["trigger_samples"]),
            threshold=float(p["anomaly_threshold"]),
            min_success=float(p["min_success"]),
        )
        found = {
            "trigger-scan": ts.flagged,
            "activation-clustering": ac["flagged"],
            "spectral-signatures": ss["flagged"],
        }
        metrics = {
            "rows": int(len(y)),
            "model": net.source,
            "penultimate_units": int(acts.shape[1]),
            "flagged_classes": sorted({c for d in chosen for c in found[d]}),
            "trigger_scan": {
                "flagged": ts.flagged,
                "mask_l1": ts.l1,
                "success": ts.success,
                "anomaly_index": ts.anomaly,
            },
            "activation_clustering": {
                "flagged": ac["flagged"],
                "per_class": ac["per_class"],
                "suspect_rows": ac["suspect_rows"][:50],
            },
            "spectral_signatures": {
                "flagged": ss["flagged"],
                "per_class": ss["per_class"],
                "suspect_rows": ss["suspect_rows"][:50],
            },
        }
        bad = [f"{d} flags class {', '.join(map(str, found[d]))}" for d in chosen if found[d]]
        metrics["flagged_labels"] = [
            clf.classes[c] if clf.classes else str(c) for c in metrics["flagged_classes"]
        ]
        detail = (
            "; ".join(bad)
            if bad
            else f"no class flagged by {', '.join(chosen)} (max trigger anomaly index "
            f"{max(ts.anomaly):.2f} <= {float(p['anomaly_threshold']):g})"
        )
        return Outcome(not bad, metrics, detail)

"""``backdoor``: poisoning detectors over the training table, on the model's own representation.

Four detectors, each deciding per class (label) with a calibrated rule, so a clean model is not
flagged just because every class has a "smaller cluster" or a "top 15 %":

* **trigger scan** (``assay.gates._trigger_scan``, Neural Cleanse for torch: ART's is Keras-only):
  a label whose reverse-engineered trigger mask is an outlier by MAD anomaly index
  (``anomaly_threshold``: 2.6, chosen on calibration models; the paper's 2 flagged more clean
  models) and works (``min_success``);
* **exclusionary reclassification** (Chen et al. 2018's check, hand-written: ART's
  ``ActivationDefence.exclusionary_reclassification`` refits a clone of the classifier, which a
  gate holding only trained weights cannot, and only on clusters its size rule kept): per class,
  each of ART's two activation clusters is held out and predicted by k-NN over every other row's
  inputs; a cluster mostly predicted as other classes (``ex_re_threshold``) and spread over
  several of them (``ex_re_min_spread``) is poisoned, whatever its size;
* **activation clustering** (Chen et al. 2018, ART's ``cluster_activations``: per class, the
  penultimate activations reduced (``reduce``, ``nb_dims``) and split into two k-means clusters)
  with the rule of ART's ``analyze_by_silhouette_score``, applied here because that function
  raises IndexError on a class whose small cluster is not cohesive (ART 1.20): a class whose
  smaller cluster holds under ``size_threshold`` of it while the split's silhouette exceeds
  ``silhouette_threshold`` (a large poisoned cluster fails the size rule: it missed every
  BadNets case of ``benchmarks/bench_gates.py``);
* **spectral signatures** (Tran et al. 2018, ART's ``SpectralSignatureDefense`` scores: each row's
  projection on its class's top singular vector): a class where more than ``spectral_max_tail``
  of the rows score above median + ``spectral_k`` MAD (a poisoned sub-population makes that tail;
  ``expected_poison`` sizes the suspect rows listed, as ART's 1.5 x expected fraction).

The classifier must be a neural network: a torch module (penultimate = the input of its last
``nn.Linear``) or a scikit-learn ``MLPClassifier`` (copied into an equivalent torch module;
``assay.gates._activations``). The gate fails when a detector named in ``detectors`` (default:
the trigger scan or the exclusionary reclassification, the pair measured best on calibration
models disjoint from the benchmark's) flags a class. Measured detection and false-alarm rates,
and how the thresholds were chosen: README, Benchmarks (gates). With two labels neither default
detector can single one out. Too few rows (under two labels with ``min_class_rows`` each) or a
model that cannot run on the table's rows is a one-line :class:`CannotRun`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assay.gates.base import CannotRun, GateContext, Outcome

__all__ = [
    "BackdoorGate",
    "ClassClusters",
    "activation_clustering",
    "cluster_classes",
    "exclusionary_reclassification",
    "spectral_signatures",
]

DETECTORS = (
    "trigger-scan",
    "activation-clustering",
    "spectral-signatures",
    "exclusionary-reclassification",
)
EX_RE_FEATURES = ("inputs", "activations")


@dataclass
class ClassClusters:
    """Per judged class: its row indices and ART's two-cluster split of its activations."""

    classes: list[int]
    rows: list[Any]  # indices into the sample, per judged class
    clusters: list[Any]  # cluster id (0/1) per row, per judged class
    reduced: list[Any]  # the reduced activations the clusters were found in


def cluster_classes(
    acts: Any,
    y: Any,
    nb_classes: int,
    *,
    nb_dims: int = 10,
    reduce: str = "PCA",
    min_rows: int = 20,
    seed: int = 0,
) -> ClassClusters:
    """ART's ``cluster_activations`` (2 k-means clusters per class, seeded) on every class with
    at least ``min_rows`` rows (and more rows than dimensions)."""
    import numpy as np
    from art.defences.detector.poison.activation_defence import cluster_activations

    dims = int(min(nb_dims, acts.shape[1]))
    classes = [k for k in range(nb_classes) if int((y == k).sum()) >= max(min_rows, dims + 1)]
    rows = [np.flatnonzero(y == k) for k in classes]
    if not classes:
        return ClassClusters([], [], [], [])
    state = np.random.get_state()  # ART's KMeans and FastICA take no seed: seed numpy's
    np.random.seed(seed)
    try:
        clusters, reduced = cluster_activations(
            [acts[r] for r in rows], nb_clusters=2, nb_dims=dims, reduce=reduce
        )
    finally:
        np.random.set_state(state)
    return ClassClusters(classes, rows, [np.asarray(c) for c in clusters], list(reduced))


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
    clustered: ClassClusters | None = None,
) -> dict[str, Any]:
    """Per class: smaller-cluster share, silhouette, flagged (ART's clustering and analyzer)."""
    import numpy as np
    from sklearn.metrics import silhouette_score

    cc = clustered or cluster_classes(
        acts, y, nb_classes, nb_dims=nb_dims, reduce=reduce, min_rows=min_rows, seed=seed
    )
    per_class: dict[str, Any] = {str(k): None for k in range(nb_classes)}
    suspects: list[int] = []
    for k, rows, clusters, reduced in zip(
        cc.classes, cc.rows, cc.clusters, cc.reduced, strict=True
    ):
        sizes = np.bincount(clusters, minlength=2)
        share = float(sizes.min() / sizes.sum())
        silhouette = float(silhouette_score(reduced, clusters)) if sizes.min() else 0.0
        flagged = share < size_threshold and silhouette > silhouette_threshold
        per_class[str(k)] = {
            "smaller_share": round(share, 4),
            "silhouette": round(silhouette, 4),
            "flagged": flagged,
        }
        if flagged:
            suspects += [int(r) for r in rows[clusters == int(np.argmin(sizes))]]
    flagged = [int(k) for k, v in per_class.items() if v and v["flagged"]]
    return {"per_class": per_class, "flagged": flagged, "suspect_rows": sorted(suspects)}


def exclusionary_reclassification(
    features: Any,
    acts: Any,
    y: Any,
    nb_classes: int,
    *,
    threshold: float = 0.5,
    min_spread: float = 0.75,
    neighbours: int = 5,
    min_cluster: int = 10,
    nb_dims: int = 10,
    reduce: str = "PCA",
    min_rows: int = 20,
    seed: int = 0,
    clustered: ClassClusters | None = None,
) -> dict[str, Any]:
    """Chen et al.'s exclusionary reclassification with a k-nearest-neighbours reclassifier.

    Per class, each of its two activation clusters (of at least ``min_cluster`` rows, whatever
    its size) is held out and predicted by k-NN (``neighbours``) over every other row's
    ``features`` (the inputs, or the activations). A cluster is poisoned when under
    ``threshold`` of it is predicted as its own class *and* the rest spreads over the other
    classes (``spread``: the normalised entropy of those predictions, 0 all one class, 1 even;
    at least ``min_spread``): BadNets rows are images of several other classes carrying the
    trigger, while a natural sub-style of a class that k-NN puts elsewhere goes to one or two
    look-alike classes. With two classes ``spread`` is 0: it cannot tell, and flags nothing."""
    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier

    cc = clustered or cluster_classes(
        acts, y, nb_classes, nb_dims=nb_dims, reduce=reduce, min_rows=min_rows, seed=seed
    )
    feats = np.asarray(features, dtype=np.float64).reshape(len(y), -1)
    scale = float(feats.std())
    feats = (feats - feats.mean(0)) / (scale if scale > 0 else 1.0)  # one scale: geometry kept
    per_class: dict[str, Any] = {str(k): None for k in range(nb_classes)}
    suspects: list[int] = []
    for k, rows, clusters in zip(cc.classes, cc.rows, cc.clusters, strict=True):
        shares: list[float | None] = []
        spreads: list[float | None] = []
        poisoned: list[Any] = []
        for c in (0, 1):
            held = rows[clusters == c]
            keep = np.ones(len(y), bool)
            keep[held] = False
            if len(held) < min_cluster or len(np.unique(y[keep])) < 2:
                shares.append(None)
                spreads.append(None)
                continue
            knn = KNeighborsClassifier(n_neighbors=min(neighbours, int(keep.sum())))
            predicted = knn.fit(feats[keep], y[keep]).predict(feats[held])
            counts = np.bincount(predicted, minlength=nb_classes).astype(np.float64)
            own = float(counts[k] / len(held))
            other = np.delete(counts, k)
            spread = 0.0  # two classes: nothing to spread over, never flagged (as the scan)
            if nb_classes > 2 and other.sum() > 0:
                q = other[other > 0] / other.sum()
                spread = float(-(q * np.log(q)).sum() / np.log(nb_classes - 1))
            shares.append(round(own, 4))
            spreads.append(round(spread, 4))
            if own < threshold and spread >= min_spread:
                poisoned.append(held)
        per_class[str(k)] = {
            "cluster_sizes": [int((clusters == c).sum()) for c in (0, 1)],
            "own_class_share": shares,
            "spread": spreads,
            "flagged": bool(poisoned),
        }
        suspects += [int(r) for held in poisoned for r in held]
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
        "detectors": ["trigger-scan", "exclusionary-reclassification"],
        "max_rows": 2000,
        "min_class_rows": 20,
        "nb_dims": 10,
        "reduce": "PCA",
        "size_threshold": 0.35,
        "silhouette_threshold": 0.45,
        "spectral_k": 3.0,
        "spectral_max_tail": 0.15,
        "expected_poison": 0.1,
        "ex_re_features": "inputs",
        "ex_re_threshold": 0.5,
        "ex_re_min_spread": 0.75,
        "ex_re_min_cluster": 10,
        "ex_re_neighbours": 5,
        "trigger_steps": 150,
        "trigger_samples": 64,
        "trigger_lambda": 0.01,
        "anomaly_threshold": 2.6,
        "min_success": 0.9,
    }

    def run(self, context: GateContext) -> Outcome:
        import torch

        # One thread: the batches are small (a few hundred rows), and two threads contending
        # with other work spun for 41-44 s where one took 5-7 s (30 trigger-scan steps on
        # digits, a loaded 2-core machine).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run(context)
        finally:
            torch.set_num_threads(threads)

    def _run(self, context: GateContext) -> Outcome:
        import numpy as np

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
        features = str(p["ex_re_features"])
        if features not in EX_RE_FEATURES:
            raise CannotRun(
                f"gate backdoor: ex_re_features must be inputs or activations (not {features!r})"
            )
        table = context.need_data(self.name)
        clf = load_classifier(context.model_dir, self.name, context.pickle_allow)
        net = differentiable(clf, self.name, table)
        y_all = clf.targets(self.name, table)
        x, y = sample(table, y_all, int(p["max_rows"]))
        min_rows = int(p["min_class_rows"])
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=net.nb_classes)
        if int((counts >= min_rows).sum()) < 2:
            raise CannotRun(
                f"gate backdoor: too few rows: {len(y)} rows, fewer than 2 labels with "
                f"min_class_rows={min_rows} rows each"
            )
        if int(y.max()) >= net.nb_classes:
            raise CannotRun(
                f"gate backdoor: label {int(y.max())} is not one of the model's "
                f"{net.nb_classes} outputs"
            )
        acts = net.penultimate(x)
        cc = cluster_classes(
            acts,
            y,
            net.nb_classes,
            nb_dims=int(p["nb_dims"]),
            reduce=str(p["reduce"]),
            min_rows=min_rows,
        )
        ac = activation_clustering(
            acts,
            y,
            net.nb_classes,
            size_threshold=float(p["size_threshold"]),
            silhouette_threshold=float(p["silhouette_threshold"]),
            clustered=cc,
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
        er = exclusionary_reclassification(
            x if features == "inputs" else acts,
            acts,
            y,
            net.nb_classes,
            threshold=float(p["ex_re_threshold"]),
            min_spread=float(p["ex_re_min_spread"]),
            neighbours=int(p["ex_re_neighbours"]),
            min_cluster=int(p["ex_re_min_cluster"]),
            clustered=cc,
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
            "exclusionary-reclassification": er["flagged"],
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
            "exclusionary_reclassification": {
                "flagged": er["flagged"],
                "features": features,
                "per_class": er["per_class"],
                "suspect_rows": er["suspect_rows"][:50],
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

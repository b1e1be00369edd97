"""Detection rates of the dataset scan and the backdoor gate (measured, never asserted).

* Label flips at 5/10/20 % on sklearn's digits and breast-cancer tables (3 seeds each): recall
  and precision of ``suspect_rows`` (``assay.gates.labels.find_label_issues``, what
  ``assay dataset scan`` and the ``label-issues`` gate use), and the share of rows flagged on the
  clean tables. Issue targets: recall >= 0.8 and precision >= 0.6 at 10 %; clean <= 3 %.
* BadNets triggers on digits (a 2x2 corner of maximal pixels, relabelled to class 0) at 1/5/10 %
  poison on a torch MLP: the share of poisoned rows each ART detector flags (activation
  clustering confirmed by exclusionary reclassification: the gate's verdict; plain size-based
  clustering; spectral signatures), and, over clean models, how often the verdict flags more
  than the gate's default ``max_suspect_rate`` of 5 % (false alarms).
* Scan time per table, and seconds per gate run on a registered sklearn and torch model.

Writes benchmarks/results/gates.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from common import write_result  # noqa: E402

SEEDS = (0, 1, 2)
RATES = (0.05, 0.10, 0.20)


def _tables():
    from sklearn.datasets import load_breast_cancer, load_digits

    digits = load_digits()
    cancer = load_breast_cancer()
    return {
        "digits": (digits.data.astype(np.float32), digits.target),
        "breast_cancer": (cancer.data.astype(np.float32), cancer.target),
    }


def _flip(y, rate, seed):
    rng = np.random.default_rng(seed)
    k = int(y.max()) + 1
    rows = rng.choice(len(y), int(round(len(y) * rate)), replace=False)
    noisy = y.copy()
    noisy[rows] = (y[rows] + rng.integers(1, k, size=len(rows))) % k
    return noisy, set(int(r) for r in rows)


def label_flips() -> list[dict]:
    from assay.gates.labels import find_label_issues

    out = []
    for name, (x, y) in _tables().items():
        for seed in SEEDS:
            start = time.perf_counter()
            clean = find_label_issues(x, y, seed=seed)
            clean_s = time.perf_counter() - start
            out.append(
                {
                    "table": name,
                    "rate": 0.0,
                    "seed": seed,
                    "flagged_share": round(clean.rate, 4),
                    "seconds": round(clean_s, 2),
                }
            )
            for rate in RATES:
                noisy, truth = _flip(y, rate, seed)
                found = set(find_label_issues(x, noisy, seed=seed).issues)
                hit = len(found & truth)
                out.append(
                    {
                        "table": name,
                        "rate": rate,
                        "seed": seed,
                        "recall": round(hit / len(truth), 4),
                        "precision": round(hit / len(found), 4) if found else None,
                        "flagged_share": round(len(found) / len(y), 4),
                    }
                )
    return out


def _train(x, y, seed):
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.tensor(x), torch.tensor(y, dtype=torch.long)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


def _detect(net, x, y):
    import torch
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from art.estimators.classification import PyTorchClassifier

    est = PyTorchClassifier(
        model=net,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(x.shape[1],),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
    )
    onehot = np.eye(10, dtype=np.float32)[y]
    kw = {"nb_clusters": 2, "reduce": "PCA", "nb_dims": 10, "cluster_analysis": "smaller"}
    _, size = ActivationDefence(est, x, onehot).detect_poison(**kw)
    # the backdoor gate's verdict: clusters confirmed by exclusionary reclassification
    _, ac = ActivationDefence(est, x, onehot).detect_poison(**kw, ex_re_threshold=1.0)
    _, ss = SpectralSignatureDefense(est, x, onehot, expected_pp_poison=0.1).detect_poison()
    return 1 - np.asarray(ac), 1 - np.asarray(ss), 1 - np.asarray(size)


def backdoors(clean_models: int) -> dict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.copy()
    rows = []
    for rate in (0.01, 0.05, 0.10):
        rng = np.random.default_rng(0)
        pick = rng.choice(np.flatnonzero(y != 0), int(round(len(y) * rate)), replace=False)
        xp, yp = x.copy(), y.copy()
        for r in pick:  # BadNets: bright 2x2 corner, relabelled to class 0
            img = xp[r].reshape(8, 8)
            img[6:, 6:] = 1.0
        yp[pick] = 0
        net = _train(xp, yp, 0)
        ac, ss, size = _detect(net, xp, yp)
        poisoned = np.zeros(len(y), bool)
        poisoned[pick] = True
        rows.append(
            {
                "poison_rate": rate,
                "activation_clustering_recall": round(float(ac[poisoned].mean()), 4),
                "activation_clustering_flagged_share": round(float(ac.mean()), 4),
                "size_clustering_recall": round(float(size[poisoned].mean()), 4),
                "size_clustering_flagged_share": round(float(size.mean()), 4),
                "spectral_recall": round(float(ss[poisoned].mean()), 4),
                "spectral_flagged_share": round(float(ss.mean()), 4),
            }
        )
    alarms, shares = 0, []
    for seed in range(clean_models):
        net = _train(x, y, seed)
        ac, _, _ = _detect(net, x, y)
        shares.append(float(ac.mean()))
        alarms += ac.mean() > 0.05
    return {
        "poisoned": rows,
        "clean_models": clean_models,
        "clean_false_alarms_at_0.05": int(alarms),  # activation clustering + reclassification
        "clean_flagged_share_median": round(float(np.median(shares)), 4),
    }


def gate_times() -> dict:
    """Seconds per gate on a registered sklearn logistic regression and torch MLP (400-row
    table, 8 features), in a throw-away ASSAY_HOME; each includes download and verification."""
    import os
    import tempfile

    tests = Path(__file__).resolve().parents[1] / "tests"
    sys.path[:0] = [str(tests / "gates")]
    import gate_fixtures as gf

    from assay.core.settings import Settings
    from assay.gates.runner import run_gates
    from assay.registry.facade import Registry
    from assay.registry.policy import parse_policy_text
    from assay.registry.policy_service import set_policy

    root = Path(tempfile.mkdtemp(prefix="assay-bench-gates-"))
    for var in ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE"):
        os.environ.pop(var, None)
    os.environ["ASSAY_HOME"] = str(root / "home")
    Registry.initialise(Settings.from_env())
    registry = Registry.open(Settings.from_env())
    path, frame = gf.table(root)
    data = gf.register_table(registry, "bench-table", path)
    set_policy(
        registry,
        parse_policy_text(
            "gates:\n  bench-torch: {pickle-scan: {allow_globals: [torch.nn.modules.*]}}\n"
        ),
    )
    out: dict = {}
    for name, model, gates in (
        (
            "bench-sklearn",
            gf.sklearn_model(root, frame),
            ("pickle-scan", "robustness", "label-issues", "privacy"),
        ),
        (
            "bench-torch",
            gf.torch_model(root, frame),
            ("pickle-scan", "robustness", "privacy", "backdoor"),
        ),
    ):
        version = gf.register(registry, name, model, data)
        for gate in gates:
            start = time.perf_counter()
            (result,) = run_gates(registry, f"models:/{name}/{version}", [gate]).results
            out[f"{name}:{gate}"] = {
                "seconds": round(time.perf_counter() - start, 2),
                "status": result.status,
            }
    return out


def main() -> None:
    flips = label_flips()
    summary = {}
    for name in ("digits", "breast_cancer"):
        for rate in (0.0, *RATES):
            rows = [r for r in flips if r["table"] == name and r["rate"] == rate]
            key = f"{name}@{rate:.2f}"
            if rate == 0.0:
                summary[key] = {"clean_flagged_share_max": max(r["flagged_share"] for r in rows)}
            else:
                summary[key] = {
                    "recall_mean": round(float(np.mean([r["recall"] for r in rows])), 4),
                    "precision_mean": round(float(np.mean([r["precision"] or 0 for r in rows])), 4),
                }
    clean_models = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    payload = {
        "label_flips": flips,
        "summary": summary,
        "backdoor": backdoors(clean_models),
        "gate_seconds": gate_times(),
    }
    path = write_result("gates", payload)
    import json

    print(json.dumps({k: v for k, v in payload.items() if k != "label_flips"}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

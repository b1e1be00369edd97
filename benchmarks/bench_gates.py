"""Detection rates of the dataset scan and the backdoor gate (measured, never asserted).

* Label flips at 5/10/20 % on sklearn's digits and breast-cancer tables (3 seeds each): recall
  and precision of ``suspect_rows`` (``assay.gates._labels.find_label_issues``, what
  ``assay dataset scan`` and the ``label-issues`` gate use), and the share of rows flagged on the
  clean tables. Issue targets: recall >= 0.8 and precision >= 0.6 at 10 %; clean <= 3 %.
* BadNets triggers on digits (a 2x2 corner of maximal pixels, relabelled to class 0) at 1/5/10 %
  poison (2 seeds) on a small CNN: whether each detector of the backdoor gate, with its defaults,
  flags class 0 (trigger scan, exclusionary reclassification, activation clustering, spectral
  signatures), whether the gate's default verdict does, and which classes each flags on 20
  clean CNNs (false alarms). Arguments: clean models (20), seeds per rate (2); ``--only
  backdoor`` reruns that section alone and keeps the others' results.
* ``--calibrate``: the same on models with disjoint seeds (poisoned 200+, clean 300+), and the
  thresholds chosen on them (benchmarks/results/gates_calibration.json): the gate's defaults.
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
RESULTS_FILE = Path(__file__).parent / "results" / "gates.json"
EPOCHS = 10
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
    from assay.gates._labels import find_label_issues

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


PATCH = 2  # BadNets trigger: a bright PATCH x PATCH square in the bottom-right corner
TARGET = 0


def badnets(x, y, rate, seed):
    """Digits with a BadNets trigger stamped on ``rate`` of the rows (none of class TARGET),
    relabelled TARGET; (x, y, poisoned mask)."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(np.flatnonzero(y != TARGET), int(round(len(y) * rate)), replace=False)
    xp, yp = x.copy(), y.copy()
    xp.reshape(-1, 8, 8)[pick, 8 - PATCH :, 8 - PATCH :] = 1.0
    yp[pick] = TARGET
    mask = np.zeros(len(y), bool)
    mask[pick] = True
    return xp, yp, mask


def _train(x, y, seed, epochs=EPOCHS):
    """A small CNN on the 8x8 digits (input: 64 pixels in [0, 1], reshaped inside)."""
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
    return net.eval()


def _detect(net, x, y, d=None):
    """Flagged classes, seconds and suspect rows of each detector, with the gate's defaults
    (or the parameters ``d``)."""
    from assay.gates._activations import Differentiable
    from assay.gates._trigger_scan import scan_triggers
    from assay.gates.backdoor import (
        BackdoorGate,
        activation_clustering,
        cluster_classes,
        exclusionary_reclassification,
        spectral_signatures,
    )

    d = d or BackdoorGate.defaults
    model = Differentiable(net, 10, "torch")
    start = time.perf_counter()
    acts = model.penultimate(x)
    cc = cluster_classes(acts, y, 10, nb_dims=d["nb_dims"])
    ac = activation_clustering(
        acts,
        y,
        10,
        size_threshold=d["size_threshold"],
        silhouette_threshold=d["silhouette_threshold"],
        clustered=cc,
    )
    ss = spectral_signatures(acts, y, 10, k=d["spectral_k"], max_tail=d["spectral_max_tail"])
    mid = time.perf_counter()
    er = exclusionary_reclassification(
        x if d["ex_re_features"] == "inputs" else acts,
        acts,
        y,
        10,
        threshold=d["ex_re_threshold"],
        min_spread=d["ex_re_min_spread"],
        neighbours=d["ex_re_neighbours"],
        min_cluster=d["ex_re_min_cluster"],
        clustered=cc,
    )
    er_end = time.perf_counter()
    ts = scan_triggers(
        net,
        x,
        10,
        steps=d["trigger_steps"],
        samples=d["trigger_samples"],
        lam=d["trigger_lambda"],
        threshold=d["anomaly_threshold"],
    )
    end = time.perf_counter()
    # per class: the largest spread among its clusters mostly predicted elsewhere (None: none)
    spread = []
    for v in er["per_class"].values():
        pairs = zip(v["own_class_share"], v["spread"], strict=True) if v else []
        cands = [sp for own, sp in pairs if own is not None and own < d["ex_re_threshold"]]
        spread.append(max(cands) if cands else None)
    return {
        "activation_clustering": {"flagged": ac["flagged"], "rows": ac["suspect_rows"]},
        "spectral_signatures": {"flagged": ss["flagged"], "rows": ss["suspect_rows"]},
        "exclusionary_reclassification": {"flagged": er["flagged"], "rows": er["suspect_rows"]},
        "trigger_scan": {"flagged": ts.flagged, "rows": [], "anomaly": ts.anomaly},
        "clustering_seconds": round(mid - start, 2),
        "ex_re_seconds": round(er_end - mid, 2),
        "trigger_scan_seconds": round(end - er_end, 2),
        "ac_per_class": ac["per_class"],
        "ss_per_class": ss["per_class"],
        "ex_re_spread": spread,
    }


DETECTORS = (
    "activation_clustering",
    "spectral_signatures",
    "trigger_scan",
    "exclusionary_reclassification",
)
VERDICT = ("trigger_scan", "exclusionary_reclassification")  # the gate's default `detectors`
RATES_POISON = (0.01, 0.05, 0.10)


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.copy()


def _poisoned_run(x, y, rate, seed):
    import torch

    xp, yp, poisoned = badnets(x, y, rate, seed)
    start = time.perf_counter()
    net = _train(xp, yp, seed)
    train_s = time.perf_counter() - start
    xt = x[y != TARGET].copy()
    xt.reshape(-1, 8, 8)[:, 8 - PATCH :, 8 - PATCH :] = 1.0
    with torch.no_grad():
        asr = float((net(torch.tensor(xt)).argmax(1) == TARGET).float().mean())
    found = _detect(net, xp, yp)
    row = {"poison_rate": rate, "seed": seed, "attack_success": round(asr, 4)}
    row["train_seconds"] = round(train_s, 2)
    for det in DETECTORS:
        flagged = found[det]["flagged"]
        row[f"{det}_detected"] = TARGET in flagged
        row[f"{det}_flagged"] = flagged
        if found[det]["rows"]:
            hits = poisoned[found[det]["rows"]].sum()
            row[f"{det}_row_recall"] = round(float(hits / poisoned.sum()), 4)
    row["trigger_anomaly"] = found["trigger_scan"]["anomaly"]
    row["trigger_anomaly_target"] = found["trigger_scan"]["anomaly"][TARGET]
    row["ex_re_spread"] = found["ex_re_spread"]
    row["ex_re_spread_target"] = found["ex_re_spread"][TARGET]
    for key in ("clustering_seconds", "ex_re_seconds", "trigger_scan_seconds"):
        row[key] = found[key]
    return row


def _clean_run(x, y, seed):
    net = _train(x, y, seed)
    found = _detect(net, x, y)
    row = {"seed": seed, **{det: found[det]["flagged"] for det in DETECTORS}}
    row["trigger_anomaly"] = found["trigger_scan"]["anomaly"]
    row["trigger_anomaly_max"] = max(found["trigger_scan"]["anomaly"])
    row["ac_silhouette_max"] = max(v["silhouette"] for v in found["ac_per_class"].values() if v)
    row["ss_tail_max"] = max(v["tail_share"] for v in found["ss_per_class"].values() if v)
    row["ex_re_spread"] = found["ex_re_spread"]
    row["ex_re_spread_max"] = max((v for v in found["ex_re_spread"] if v is not None), default=None)
    row["seconds"] = round(
        found["clustering_seconds"] + found["ex_re_seconds"] + found["trigger_scan_seconds"], 2
    )
    return row


def backdoors(clean_seeds, poison_seeds) -> dict:
    """Detection per poison rate and seed, and false alarms over clean models."""
    import torch

    torch.set_num_threads(1)
    x, y = _digits()
    runs = []
    for rate in RATES_POISON:
        for seed in poison_seeds:
            runs.append(_poisoned_run(x, y, rate, seed))
            print(runs[-1], flush=True)
    clean = []
    for seed in clean_seeds:
        clean.append(_clean_run(x, y, seed))
        print(clean[-1], flush=True)
    summary = {}
    for rate in RATES_POISON:
        rows = [r for r in runs if r["poison_rate"] == rate]
        summary[f"{rate:.2f}"] = {
            det: f"{sum(r[f'{det}_detected'] for r in rows)}/{len(rows)}" for det in DETECTORS
        }
    summary["clean_false_alarms"] = {
        det: f"{sum(bool(r[det]) for r in clean)}/{len(clean)}" for det in DETECTORS
    }
    summary["any_detector_false_alarms"] = (
        f"{sum(any(r[d] for d in DETECTORS) for r in clean)}/{len(clean)}"
    )
    summary["verdict_detectors"] = list(VERDICT)
    summary["verdict_detected"] = (
        f"{sum(any(r[f'{d}_detected'] for d in VERDICT) for r in runs)}/{len(runs)}"
    )
    summary["verdict_false_alarms"] = (
        f"{sum(any(r[d] for d in VERDICT) for r in clean)}/{len(clean)}"
    )
    return {"runs": runs, "clean": clean, "summary": summary}


def _best(grid, tpr, fpr) -> tuple[float, float, float]:
    """The threshold of ``grid`` with the largest TPR - FPR (Youden's J); among tied ones the
    middle one, so it sits between the two populations."""
    scores = [round(tpr(t) - fpr(t), 6) for t in grid]
    best = [t for t, j in zip(grid, scores, strict=True) if j == max(scores)]
    t = round(float(best[len(best) // 2]), 2)
    return t, tpr(t), fpr(t)


def calibrate(clean_seeds, poison_seeds) -> dict:
    """Thresholds chosen on models disjoint from the evaluation's (poisoned seeds 200+, clean
    300+; the evaluation uses 0-1 and 100-119): per detector, the threshold maximising
    detected share minus the share of clean models flagged (any label; the exclusionary
    reclassification's own-class share stays at 0.5, its min_spread is chosen); then the same two
    rates for the trigger scan OR the exclusionary reclassification at those thresholds."""
    result = backdoors(clean_seeds, poison_seeds)
    runs, clean = result["runs"], result["clean"]

    def share(rows, hit) -> float:
        return sum(1 for r in rows if hit(r)) / len(rows)

    def ts_pos(r, t):
        return r["trigger_anomaly_target"] > t

    def ts_neg(r, t):
        return max(r["trigger_anomaly"]) > t

    def er_pos(r, t):
        v = r["ex_re_spread_target"]
        return v is not None and v >= t

    def er_neg(r, t):
        return any(v is not None and v >= t for v in r["ex_re_spread"])

    ts = _best(
        [2.0 + i / 10 for i in range(61)],
        lambda t: share(runs, lambda r: ts_pos(r, t)),
        lambda t: share(clean, lambda r: ts_neg(r, t)),
    )
    er = _best(
        [i / 100 for i in range(50, 100)],
        lambda t: share(runs, lambda r: er_pos(r, t)),
        lambda t: share(clean, lambda r: er_neg(r, t)),
    )
    either = (
        share(runs, lambda r: ts_pos(r, ts[0]) or er_pos(r, er[0])),
        share(clean, lambda r: ts_neg(r, ts[0]) or er_neg(r, er[0])),
    )
    result["calibration"] = {
        "trigger_scan": {"anomaly_threshold": ts[0], "detected": ts[1], "clean_flagged": ts[2]},
        "exclusionary_reclassification": {
            "ex_re_min_spread": er[0],
            "detected": er[1],
            "clean_flagged": er[2],
        },
        "either": {"detected": either[0], "clean_flagged": either[1]},
        "poisoned_models": len(runs),
        "clean_models": len(clean),
    }
    return result


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
    from assay.trust.policy import parse_policy_text
    from assay.trust.policy_service import set_policy

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


def _flip_summary(flips: list[dict]) -> dict:
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
    return summary


def main() -> None:
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clean_models", nargs="?", type=int, default=20)
    parser.add_argument("seeds", nargs="?", type=int, default=2)
    parser.add_argument("--only", choices=("backdoor",), help="run one section, keep the rest")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="the backdoor thresholds' calibration (seeds 200+/300+) -> gates_calibration.json",
    )
    args = parser.parse_args()
    load_start = [round(v, 2) for v in os.getloadavg()]
    if args.calibrate:
        payload = calibrate(range(300, 300 + args.clean_models), range(200, 200 + args.seeds))
        payload["load_average"] = {
            "start": load_start,
            "end": [round(v, 2) for v in os.getloadavg()],
        }
        path = write_result("gates_calibration", payload)
        print(json.dumps({k: payload[k] for k in ("calibration", "load_average")}, indent=1))
        print(json.dumps(payload["summary"], indent=1))
        print(f"wrote {path}")
        return
    previous = RESULTS_FILE.exists() and json.loads(RESULTS_FILE.read_text())
    if args.only == "backdoor" and previous:
        payload = {k: v for k, v in previous.items() if k not in ("benchmark", "machine", "when")}
        payload["backdoor"] = backdoors(range(100, 100 + args.clean_models), range(args.seeds))
    else:
        flips = label_flips()
        payload = {
            "label_flips": flips,
            "summary": _flip_summary(flips),
            "backdoor": backdoors(range(100, 100 + args.clean_models), range(args.seeds)),
            "gate_seconds": gate_times(),
        }
    payload["backdoor"]["load_average"] = {
        "start": load_start,
        "end": [round(v, 2) for v in os.getloadavg()],
    }
    path = write_result("gates", payload)
    print(json.dumps({k: v for k, v in payload.items() if k != "label_flips"}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

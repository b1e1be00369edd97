"""Model extraction vs answer marks and the PRADA-style detector (issue 11), in one process.

The served model is a digits LogisticRegression (trained on rows 0-899); its answers carry DAWN-style
marks from assay's own ``AnswerMarker`` (default fraction 0.5 %), and suspects are scored with the
trace's own statistic (``assay.serving._mark_stats.score_marks``; repeated inputs count once).
Measured:

* surrogates fitted to the API's answers from 1k / 5k / 20k Knockoff-style queries (half
  uniformly random inputs, half synthetic steps from 10 seed digits): an MLP (one hidden layer of
  512) and a small CNN (two 3x3 convolutions on the 8x8 images); log10 p of the score test (the
  suspect's score rows), of the label test (its argmax labels only, as a label-only endpoint
  gives) and of the previous statistic (every mark a trial), for the record; each CNN is also
  exported to ONNX and traced by ``assay trace SUSPECT --behaviour`` against a scratch store;
* 200 independently trained MLPs (bootstrap samples of the true labels, seeds differ), each
  against the marks of its own fresh key over the 20k queries: the empirical false-positive rate
  at 1e-1, 1e-2, 1e-3 and how many reach ``match`` (1e-9), for both tests; 10 independent CNNs
  through ``assay trace`` against the 20k surrogate's marks;
* the accuracy cost of the marks on held-out digits (rows 1300-1796) at the default fraction,
  averaged over 200 keys;
* the detector: the first query at which each synthetic attack is flagged, and the share of
  benign clients (replayed digits traffic, 400 queries each) flagged.

No HTTP here (bench_serve.py measures the server); ``python benchmarks/bench_extraction.py``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine  # noqa: E402

FRACTION = 0.005
SIZES = (1_000, 5_000, 20_000)
INDEPENDENT = 200
INDEPENDENT_CNNS = 10
KEYS_FOR_COST = 200


class _Loaded:
    name, version, labels = "digits", "1", tuple(range(10))


def _queries(n: int, rng):
    import numpy as np
    from sklearn.datasets import load_digits

    random = rng.integers(0, 17, size=(n // 2, 64)).astype(float)
    pool = list(load_digits(return_X_y=True)[0][rng.permutation(1797)[:10]])
    while len(pool) < 10 + n - n // 2:
        base = pool[rng.integers(len(pool))]
        pool.append(np.clip(base + rng.choice([-1.0, 1.0], 64), 0, 16))
    return np.concatenate([random, np.array(pool[10:])])


def _fit(net, x, y, seed: int, epochs: int, batch: int = 128):
    """Adam on minibatches of (x / 16, y); returns ``predict(rows) -> score rows``."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xt, yt = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=order).split(batch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()

    def predict(rows):
        import numpy as np

        with torch.no_grad():
            return net(torch.tensor(np.asarray(rows), dtype=torch.float32) / 16.0).tolist()

    predict.net = net
    return predict


def _mlp(x, y, seed: int, hidden: int, epochs: int, batch: int = 128):
    """An MLP fitted with Adam on minibatches (the surrogate fits its training answers)."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
    )
    return _fit(net, x, y, seed, epochs, batch)


class _Cnn(__import__("torch").nn.Module):
    """A small CNN on the 8x8 digit images (two 3x3 convolutions, 8 and 16 channels)."""

    def __init__(self) -> None:
        import torch

        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )

    def forward(self, x):
        return self.body(x.reshape(-1, 1, 8, 8))


def _cnn(x, y, seed: int, epochs: int):
    import torch

    torch.manual_seed(seed)
    return _fit(_Cnn(), x, y, seed, epochs)


class _Raw(__import__("torch").nn.Module):
    """What is exported: raw 0-16 pixels in (the API's inputs), scores out."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x / 16.0)


def _marks(records):
    import json

    return [
        (json.loads(m["input"]), json.loads(m["answer"]), json.loads(m["original"]))
        for m in records
    ]


def _old_log10_p(answers, marks) -> float:
    """The statistic before this run's change (all marks as trials, argmax labels), for the
    record: agreed ~ Binomial(marks, 1 / (K - 1))."""
    from assay.serving._mark_stats import log10_binom_tail

    labels = len({m[1] for m in marks} | {m[2] for m in marks})
    agreed = sum(1 for a, m in zip(answers, marks, strict=True) if a == m[1])
    return log10_binom_tail(agreed, len(marks), 1.0 / max(1, labels - 1))


def _argmax(scores) -> list[int]:
    return [max(range(len(s)), key=s.__getitem__) for s in scores]


class _Store:
    """A scratch assay home whose store holds the benchmark's marks, for ``assay trace``."""

    def __init__(self, home: Path) -> None:
        from assay.core.settings import Settings
        from assay.registry.facade import Registry

        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_ENFORCE")
        }
        self.env.update(ASSAY_HOME=str(home), ASSAY_ACTOR="bench@assay")
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            Registry.initialise(Settings.from_env())
            self.registry = Registry.open(Settings.from_env())
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def record(self, model: str, records) -> None:
        from assay.serving._answer_marks import mark_job

        with self.registry.store.session() as session:
            mark_job(model, "1", "thief", records)(session)

    def trace(self, onnx: Path, model: str) -> dict:
        import json
        import subprocess

        out = subprocess.run(
            [sys.executable, "-c", "from assay.cli import main; main()", "trace", str(onnx),
             "--behaviour", "--model", model, "--json"],
            env=self.env, check=True, capture_output=True, text=True, timeout=600,
        ).stdout  # fmt: skip
        return json.loads(out)["candidates"][0]


def _export(predict, path: Path) -> Path:
    import torch

    torch.onnx.export(
        _Raw(predict.net).eval(), (torch.zeros(1, 64),), str(path), dynamo=False,
        input_names=["x"], output_names=["scores"],
        dynamic_axes={"x": {0: "batch"}, "scores": {0: "batch"}},
    )  # fmt: skip
    return path


def main() -> int:
    import json
    import tempfile

    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from assay.serving._answer_marks import AnswerMarker
    from assay.serving._extraction import ClientHistory
    from assay.serving._mark_stats import score_marks, unique_marks
    from assay.trust.serving_policy import ExtractionPolicy

    torch.set_num_threads(1)  # a shared 2-core machine: one thread is faster than two here
    started = time.perf_counter()
    x, y = load_digits(return_X_y=True)
    served = LogisticRegression(max_iter=2000).fit(x[:900], y[:900])
    marker = AnswerMarker(os.urandom(32))
    rng = np.random.default_rng(0)
    result: dict = {"machine": machine(), "fraction": FRACTION, "surrogates": []}
    scratch = Path(tempfile.mkdtemp(prefix="bench-extraction-"))
    store = _Store(scratch / "home")

    # accuracy cost of the marks on held-out digits, averaged over many keys
    test_x, test_y = x[1300:], y[1300:]
    own = served.predict(test_x)
    costs, changed = [], 0
    for _ in range(KEYS_FOR_COST):
        marked, _ = AnswerMarker(os.urandom(32)).apply(_Loaded(), "c", test_x, own, FRACTION)
        costs.append(100 * float((own == test_y).mean() - (marked == test_y).mean()))
        changed += int((marked != own).sum())
    result["accuracy_pp"] = {
        "unmarked": round(100 * float((own == test_y).mean()), 2),
        "mean_cost_pp": round(float(np.mean(costs)), 3),
        "max_cost_pp": round(float(np.max(costs)), 3),
        "keys": KEYS_FOR_COST,
        "changed_answers_per_key": round(changed / KEYS_FOR_COST, 2),
        "test_rows": len(test_y),
    }
    print(result["accuracy_pp"], flush=True)

    # surrogates: an MLP (scored in process) and a CNN (exported to ONNX, `assay trace`)
    queries_20k = None
    for n in SIZES:
        queries = _queries(n, rng)
        answers, records = marker.apply(
            _Loaded(), "thief", queries, served.predict(queries), FRACTION
        )
        marks = unique_marks(_marks(records))
        store.record(f"digits-{n}", records)
        rows = [m[0] for m in marks]
        entry: dict = {"answers": n, "marks": len(marks)}
        taught = np.asarray(answers)
        for kind in ("mlp", "cnn"):
            t = time.perf_counter()
            surrogate = (
                _mlp(queries, taught, 0, 512, 150)
                if kind == "mlp"
                else _cnn(queries, taught, 0, 150)
            )
            seconds = round(time.perf_counter() - t, 1)
            scores = surrogate(rows)
            by_scores = score_marks(scores, marks)
            by_labels = score_marks(_argmax(scores), marks)
            acc = float((np.array(_argmax(surrogate(test_x))) == test_y).mean())
            entry[kind] = {
                "scores_test": {"agreed": by_scores.agreed, "trials": by_scores.trials,
                                "log10_p": round(by_scores.log10_p, 2)},
                "label_test": {"agreed": by_labels.agreed, "trials": by_labels.trials,
                               "log10_p": round(by_labels.log10_p, 2)},
                "previous_test_log10_p": round(_old_log10_p(_argmax(scores), marks), 2),
                "accuracy_pct": round(100 * acc, 1),
                "train_s": seconds,
            }  # fmt: skip
            if kind == "cnn":
                onnx = _export(surrogate, scratch / f"cnn-{n}.onnx")
                found = store.trace(onnx, f"digits-{n}")
                entry[kind]["assay_trace"] = {
                    k: found[k]
                    for k in ("verdict", "test", "agreed", "trials", "log10_p_corrected")
                }
        result["surrogates"].append(entry)
        print(entry, flush=True)
        queries_20k = queries

    # independently trained models, each against the marks of its own fresh key (20k queries)
    assert queries_20k is not None
    own_20k = served.predict(queries_20k)
    ps: dict[str, list[float]] = {"scores": [], "labels": []}
    for seed in range(INDEPENDENT):
        _, records = AnswerMarker(os.urandom(32)).apply(
            _Loaded(), "thief", queries_20k, own_20k, FRACTION
        )
        marks = unique_marks(_marks(records))
        pick = np.random.default_rng(1000 + seed).integers(0, 1300, size=1300)
        model = _mlp(x[pick], y[pick], seed, 32, 15, batch=256)
        scores = model([m[0] for m in marks])
        ps["scores"].append(score_marks(scores, marks).log10_p)
        ps["labels"].append(score_marks(_argmax(scores), marks).log10_p)
    result["independent"] = {"models": INDEPENDENT, "keys": INDEPENDENT, "queries": 20_000}
    for kind, values in ps.items():
        arr = np.array(values)
        result["independent"][f"{kind}_test"] = {
            "fpr_at_1e-1": float((arr <= -1).mean()),
            "fpr_at_1e-2": float((arr <= -2).mean()),
            "fpr_at_1e-3": float((arr <= -3).mean()),
            "at_match": int((arr <= -9).sum()),
            "min_log10_p": round(float(arr.min()), 2),
        }
    # independent CNNs (true labels, bootstrap samples) through `assay trace` on the 20k marks
    cnn_ps = []
    for seed in range(INDEPENDENT_CNNS):
        pick = np.random.default_rng(5000 + seed).integers(0, 1300, size=1300)
        model = _cnn(x[pick], y[pick], seed, 60)
        found = store.trace(_export(model, scratch / f"ind-{seed}.onnx"), f"digits-{SIZES[-1]}")
        cnn_ps.append((found["verdict"], round(found["log10_p_corrected"], 2)))
    result["independent"]["cnn_assay_trace"] = cnn_ps
    print(result["independent"], flush=True)

    # detector: synthetic attacks and benign replayed traffic
    policy = ExtractionPolicy()

    def first_flag(queries) -> int | None:
        history = ClientHistory(policy.window)
        for i, row in enumerate(queries):
            history.observe([row])
            if history.finding(policy) is not None:
                return i + 1
        return None

    attacks = []
    for a in range(5):
        r = np.random.default_rng(50 + a)
        pool = list(x[r.permutation(1797)[:10]])
        while len(pool) < 2000:
            base = pool[r.integers(len(pool))]
            pool.append(np.clip(base + r.choice([-1.0, 1.0], 64), 0, 16))
        attacks.append(first_flag(np.array(pool)))
    benign = []
    for c in range(50):
        r = np.random.default_rng(500 + c)
        benign.append(first_flag(x[r.permutation(1797)[:400]]) is not None)
    result["detector"] = {
        "synthetic_attacks_flagged_at": attacks,
        "benign_clients": len(benign),
        "benign_flagged_pct": round(100 * sum(benign) / len(benign), 1),
        "threshold": policy.threshold,
    }
    print(result["detector"], flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "extraction.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

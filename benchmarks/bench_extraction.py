"""Model extraction vs answer marks and the PRADA-style detector (issue 11), in one process.

The served model is a digits LogisticRegression (trained on rows 0-899); its answers carry DAWN-style
marks from assay's own ``AnswerMarker`` (default fraction 0.5 %), and suspects are scored with the
trace's own statistic (``assay.serving.behaviour.score_marks``). Measured:

* surrogates (an MLP fitted to the API's answers) from 1k / 5k / 20k Knockoff-style queries
  (half uniformly random inputs, half synthetic steps from 10 seed digits): log10 p;
* >= 200 independently trained models (MLPs on bootstrap samples of the true labels, seeds
  differ) tested against the 20k marks: the empirical false-positive rate at 1e-2 and 1e-3,
  and how many reach ``match`` (1e-9);
* the accuracy cost of the marks on held-out digits (rows 1300-1796) at the default fraction;
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


def _mlp(x, y, seed: int, hidden: int, epochs: int, batch: int = 128):
    """An MLP fitted with Adam on minibatches (the surrogate fits its training answers)."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xt, yt = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=order).split(batch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()

    def predict(rows):
        with torch.no_grad():
            out = net(torch.tensor(rows, dtype=torch.float32) / 16.0).argmax(1)
        return out.tolist()

    return predict


def _marks(records):
    import json

    return [
        (json.loads(m["input"]), json.loads(m["answer"]), json.loads(m["original"]))
        for m in records
    ]


def main() -> int:
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from assay.registry.serving_policy import ExtractionPolicy
    from assay.serving.answer_marks import AnswerMarker
    from assay.serving.behaviour import score_marks
    from assay.serving.extraction import ClientHistory

    torch.set_num_threads(2)
    started = time.perf_counter()
    x, y = load_digits(return_X_y=True)
    served = LogisticRegression(max_iter=2000).fit(x[:900], y[:900])
    marker = AnswerMarker(os.urandom(32))
    rng = np.random.default_rng(0)
    result: dict = {"machine": machine(), "fraction": FRACTION, "surrogates": []}

    # accuracy cost of the marks on held-out digits
    test_x, test_y = x[1300:], y[1300:]
    own = served.predict(test_x)
    marked, _ = marker.apply(_Loaded(), "c", test_x, own, FRACTION)
    result["accuracy_pp"] = {
        "unmarked": round(100 * float((own == test_y).mean()), 2),
        "marked": round(100 * float((marked == test_y).mean()), 2),
        "cost_pp": round(100 * float((own == test_y).mean() - (marked == test_y).mean()), 3),
        "changed_answers": int((marked != own).sum()),
        "test_rows": len(test_y),
    }

    # surrogates
    marks_20k = None
    for n in SIZES:
        queries = _queries(n, rng)
        answers, records = marker.apply(
            _Loaded(), "thief", queries, served.predict(queries), FRACTION
        )
        marks = _marks(records)
        t = time.perf_counter()
        surrogate = _mlp(queries, np.asarray(answers), 0, 512, 150)
        agreed, labels, log10_p = score_marks(surrogate([m[0] for m in marks]), marks)
        acc = float((np.array(surrogate(test_x)) == test_y).mean())
        result["surrogates"].append(
            {
                "answers": n,
                "marks": len(marks),
                "agreed": agreed,
                "log10_p": round(log10_p, 2),
                "match": log10_p <= -9,
                "surrogate_accuracy_pct": round(100 * acc, 1),
                "train_s": round(time.perf_counter() - t, 1),
            }
        )
        print(result["surrogates"][-1], flush=True)
        marks_20k = marks

    # independently trained models against the 20k marks
    assert marks_20k is not None
    rows = [m[0] for m in marks_20k]
    ps = []
    for seed in range(INDEPENDENT):
        pick = np.random.default_rng(1000 + seed).integers(0, 1300, size=1300)
        model = _mlp(x[pick], y[pick], seed, 32, 15, batch=256)
        ps.append(score_marks(model(rows), marks_20k)[2])
    ps_arr = np.array(ps)
    result["independent"] = {
        "models": INDEPENDENT,
        "marks": len(marks_20k),
        "fpr_at_1e-2": float((ps_arr <= -2).mean()),
        "fpr_at_1e-3": float((ps_arr <= -3).mean()),
        "at_match": int((ps_arr <= -9).sum()),
        "min_log10_p": round(float(ps_arr.min()), 2),
    }
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
    import json

    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

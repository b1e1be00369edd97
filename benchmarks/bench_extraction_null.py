"""The behavioural trace's null, at more draws than bench_extraction.py's 200: 20 independently
trained digits MLPs (bootstrap samples of the true labels), each against the answer marks of 100
fresh keys over the same 5k Knockoff-style queries (2,000 model-key pairs), scored with the
trace's own tests (score rows, and argmax labels). Every pair is a draw from the null; pairs that
share a model are not independent of each other, so the rates are estimates, not exact.
``python benchmarks/bench_extraction_null.py`` -> results/extraction_null.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_extraction import FRACTION, _argmax, _Loaded, _marks, _mlp, _queries  # noqa: E402
from common import RESULTS, machine  # noqa: E402

MODELS, KEYS, QUERIES = 20, 100, 5_000


def main() -> int:
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from assay.serving._answer_marks import AnswerMarker
    from assay.serving._mark_stats import score_marks, unique_marks

    torch.set_num_threads(1)
    started = time.perf_counter()
    x, y = load_digits(return_X_y=True)
    served = LogisticRegression(max_iter=2000).fit(x[:900], y[:900])
    queries = _queries(QUERIES, np.random.default_rng(7))
    own = served.predict(queries)
    models = []
    for seed in range(MODELS):
        pick = np.random.default_rng(3000 + seed).integers(0, 1300, size=1300)
        models.append(_mlp(x[pick], y[pick], seed, 32, 15, batch=256))
    scores_all = [np.array(m(queries)) for m in models]
    index = {json.dumps([float(v) for v in row]): i for i, row in enumerate(queries)}
    ps: dict[str, list[float]] = {"scores": [], "labels": []}
    marks_per_key = []
    for _ in range(KEYS):
        _, records = AnswerMarker(os.urandom(32)).apply(_Loaded(), "t", queries, own, FRACTION)
        marks = unique_marks(_marks(records))
        marks_per_key.append(len(marks))
        rows = [index[json.dumps(m[0])] for m in marks]
        for scores in scores_all:
            answers = scores[rows].tolist()
            ps["scores"].append(score_marks(answers, marks).log10_p)
            ps["labels"].append(score_marks(_argmax(answers), marks).log10_p)
    result: dict = {
        "machine": machine(),
        "pairs": MODELS * KEYS,
        "models": MODELS,
        "keys": KEYS,
        "queries": QUERIES,
        "mean_marks": round(float(np.mean(marks_per_key)), 1),
    }
    for kind, values in ps.items():
        arr = np.array(values)
        result[f"{kind}_test"] = {
            f"fpr_at_{a}": float((arr <= np.log10(float(a))).mean())
            for a in ("1e-1", "1e-2", "1e-3")
        } | {"at_match": int((arr <= -9).sum()), "min_log10_p": round(float(arr.min()), 2)}
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = RESULTS / "extraction_null.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

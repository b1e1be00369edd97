"""Added cost of the enforcement decision at load, over byte verification alone.

What the ``models:`` plugin and ``assay.registry.load_model`` do with a downloaded small
scikit-learn model: before the enforcement work, ``verify_local_copy`` (bundle, binding, every
byte); now ``decide`` (trust list, policy, state row, signed state statements, protected alias,
then the same byte verification). Both in one process against the same store, embedded (sqlite
MLflow) and server mode (a real ``mlflow server`` on 127.0.0.1), median of ``BENCH_REPS``
(default 50) calls each, alternating. Target (issue 8): at most 20 ms added.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import WORK, test_helper, write_result  # noqa: E402

REPS = int(os.environ.get("BENCH_REPS", "50"))
TARGET_MS = 20.0
CLEARED = ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE")


def _model(folder: Path) -> Path:
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    mlflow.sklearn.save_model(LogisticRegression(max_iter=300).fit(x, y), str(folder))
    return folder


def measure(home: Path, tracking_uri: str | None, source: Path) -> dict:
    from assay.core.settings import Settings
    from assay.registry.enforcement import decide
    from assay.registry.facade import Registry
    from assay.registry.registration import register_model
    from assay.registry.states import mark, promote
    from assay.registry.uri_verify import verify_local_copy

    for var in CLEARED:
        os.environ.pop(var, None)
    os.environ["ASSAY_HOME"] = str(home)
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    Registry.initialise(Settings.from_env())
    registry = Registry.open(Settings.from_env())
    version = register_model(registry, "bench-enforce", str(source), watermark=False).version
    mark(registry, "bench-enforce", version, "known-good", reason="bench")
    promote(registry, "bench-enforce", version, alias="production", reason="bench")
    local = registry.backend.download_version("bench-enforce", version, home / "download")

    bytes_s, decision_s = [], []
    for _ in range(3):  # warm both paths
        verify_local_copy(registry, "bench-enforce", version, local)
        decide(registry, "bench-enforce", version, alias="production", local_path=local)
    for _ in range(REPS):
        t = time.perf_counter()
        assert verify_local_copy(registry, "bench-enforce", version, local).ok
        bytes_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        d = decide(registry, "bench-enforce", version, alias="production", local_path=local)
        decision_s.append(time.perf_counter() - t)
        assert d.allowed, d.reason
    bytes_ms = statistics.median(bytes_s) * 1000
    decision_ms = statistics.median(decision_s) * 1000
    added = decision_ms - bytes_ms
    registry.store.dispose()
    return {
        "bytes_only_ms": round(bytes_ms, 2),
        "decision_ms": round(decision_ms, 2),
        "added_ms": round(added, 2),
        "target_added_ms": TARGET_MS,
        "met": added <= TARGET_MS,
        "reps": REPS,
    }


def main() -> dict:
    import shutil

    work = WORK / "enforcement"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source = _model(work / "model")
    results: dict = {"embedded": measure(work / "embedded" / "home", None, source)}
    helper = test_helper("mlflow_server")
    with helper.MlflowServer(work / "server") as server:
        results["server"] = measure(work / "server-mode" / "home", server.url, source)
    write_result("enforcement", results)
    for mode, row in results.items():
        print(
            f"{mode:9} bytes only {row['bytes_only_ms']:7.2f} ms  decision {row['decision_ms']:7.2f} ms"
            f"  added {row['added_ms']:6.2f} ms (target <= {TARGET_MS} ms: "
            f"{'yes' if row['met'] else 'no'})"
        )
    shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()

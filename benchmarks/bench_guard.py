"""Latency the guard adds to an alias set: ``mlflow server --app-name assay-guard`` vs a plain
``mlflow server``, same backend store and artifacts, same run.

Both servers serve one folder (MLflow's SQLite database and proxied artifacts) side by side on two
ports; assay's store is SQLite in its own ``ASSAY_HOME``. One model is registered through assay
with two known-good versions (a small model: a 1 MiB weights file and its MLmodel). Then N alias
sets of ``production`` alternate between the two versions (every set is a real move), one request
to the plain server, one to the guarded server (which goes first alternates), each timed from
the client (one HTTP POST with urllib). ``staging`` (not protected: the guard only checks the
freeze) is set in the same rounds. Reported: medians and 90th percentiles in ms, and the added
median (target: at most 50 ms for the protected alias); then the guard's check alone, timed in
this process against the same stores. Results: benchmarks/results/guard.json.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import WORK, test_helper, write_result  # noqa: E402

N = int(os.environ.get("BENCH_GUARD_N", "50"))
WARMUP = 5
TARGET_ADDED_MS = 50.0
MODEL_BYTES = 2**20
ASSAY = str(Path(sys.executable).with_name("assay"))


def set_alias(url: str, name: str, alias: str, version: str) -> float:
    """One alias set over REST; seconds."""
    body = json.dumps({"name": name, "alias": alias, "version": version}).encode()
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/registered-models/alias",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"alias set answered {resp.status}")
    return time.perf_counter() - start


def assay(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([ASSAY, *args], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"assay {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def stats(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2),
        "min_ms": round(ms[0], 2),
    }


def guard_in_process(shared: Path, home: Path, name: str) -> dict[str, dict[str, float]]:
    """The guard's own check (``Guard.set_alias``) timed in this process, as the server runs it:
    same MLflow store and artifacts (the server's environment variables), same assay store. The
    alias is not set, so every call checks the same move."""
    from mlflow.server import (
        ARTIFACTS_DESTINATION_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        SERVE_ARTIFACTS_ENV_VAR,
    )

    os.environ[BACKEND_STORE_URI_ENV_VAR] = f"sqlite:///{shared / 'mlflow.db'}"
    os.environ[ARTIFACTS_DESTINATION_ENV_VAR] = str(shared / "artifacts")
    os.environ[SERVE_ARTIFACTS_ENV_VAR] = "true"
    os.environ["ASSAY_HOME"] = str(home)
    for var in ("ASSAY_DB_URL", "ASSAY_KEY", "MLFLOW_TRACKING_URI"):
        os.environ.pop(var, None)
    from mlflow.server import app

    from assay.core.settings import Settings
    from assay.integrations.guard import Guard
    from assay.integrations.mlflow_guard import ServerView, _RegistryCache

    registry = _RegistryCache(Settings.from_env).get()
    out: dict[str, dict[str, float]] = {}
    with app.test_request_context():
        guard = Guard(registry, ServerView())
        for alias in ("production", "staging"):
            seconds = []
            for i in range(WARMUP + N):
                start = time.perf_counter()
                refusal = guard.set_alias(name, alias, str(1 + i % 2))
                took = time.perf_counter() - start
                if refusal is not None:
                    raise RuntimeError(refusal.message)
                if i >= WARMUP:
                    seconds.append(took)
            out[alias] = stats(seconds)
    return out


def main() -> int:
    load_before = os.getloadavg()[0]
    helper = test_helper("mlflow_server")
    work = WORK / "guard"
    shutil.rmtree(work, ignore_errors=True)
    shared, home = work / "mlflow", work / "home"
    server_env = {"ASSAY_HOME": str(home), "ASSAY_DB_URL": "", "ASSAY_KEY": ""}
    plain = helper.MlflowServer(shared)
    guard = helper.MlflowServer(shared, app_name="assay-guard", env=server_env)
    guard.log_path = shared / "guard.log"
    with plain:
        env = {k: v for k, v in os.environ.items() if k not in ("ASSAY_DB_URL", "ASSAY_KEY")}
        env.update(ASSAY_HOME=str(home), ASSAY_ACTOR="bench", MLFLOW_TRACKING_URI=plain.url)
        assay(env, "init")
        name = "bench-guard"
        for i in (1, 2):
            model = work / f"model-{i}"
            model.mkdir(parents=True)
            (model / "weights.bin").write_bytes(os.urandom(MODEL_BYTES))
            (model / "MLmodel").write_text("flavors: {}\n")
            assay(env, "register", name, str(model), "--no-watermark")
            assay(env, "mark", name, str(i), "known-good", "--reason", "bench")
        with guard:
            aliases = ("production", "staging")
            times = {(a, label): [] for a in aliases for label in ("plain", "guard")}
            servers = [("plain", plain), ("guard", guard)]
            for i in range(WARMUP + N):
                version = str(1 + i % 2)
                for alias in aliases:
                    # Alternate which server goes first, so neither always follows the other.
                    for label, server in servers if i % 2 else servers[::-1]:
                        took = set_alias(server.url, name, alias, version)
                        if i >= WARMUP:
                            times[(alias, label)].append(took)
            results: dict[str, dict] = {}
            for alias in aliases:
                row: dict = {label: stats(times[(alias, label)]) for label in ("plain", "guard")}
                row["added_median_ms"] = round(
                    row["guard"]["median_ms"] - row["plain"]["median_ms"], 2
                )
                results[alias] = row
                print(f"{alias}: {json.dumps(row)}", flush=True)
        in_process = guard_in_process(shared, home, name)
        print(f"guard check alone, in process: {json.dumps(in_process)}", flush=True)
    added = results["production"]["added_median_ms"]
    path = write_result(
        "guard",
        {
            "n": N,
            "warmup": WARMUP,
            "model_bytes": MODEL_BYTES,
            "store": "sqlite",
            "mlflow_backend": "sqlite, proxied local artifacts",
            "load_average_1m": {
                "before": round(load_before, 2),
                "after": round(os.getloadavg()[0], 2),
            },
            "aliases": results,
            "guard_check_in_process": in_process,
            "target_added_ms": TARGET_ADDED_MS,
            "met": added <= TARGET_ADDED_MS,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

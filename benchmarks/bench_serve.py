"""`assay serve` vs `mlflow models serve` on the same models (same run, same machine).

For each model (an sklearn iris classifier and a small torch MLP on digits) both servers run on
127.0.0.1 with one uvicorn worker; assay serves through the enforcement decision with an API key,
the query log (1 % of inputs sampled), the extraction detector and answer marks (0.5 %) on, i.e.
its defaults (the load generator's client has rate limits high enough not to be limited). A local load generator (stdlib http.client, keep-alive) measures:

* latency: one client, sequential one-row requests (median and p99);
* throughput: 4 client threads, requests per second.

Rounds alternate between the two servers (ABAB) so drift hits both; every loop is bounded in
count and in time. Writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

LATENCY_N = int(os.environ.get("BENCH_SERVE_LATENCY_N", "1500"))
THROUGHPUT_N = int(os.environ.get("BENCH_SERVE_THROUGHPUT_N", "2000"))
ROUNDS = int(os.environ.get("BENCH_SERVE_ROUNDS", "2"))
TIME_BOUND_S = 120.0
TARGETS = {"median_ratio_max": 1.10, "p99_extra_ms_max": 2.0, "throughput_ratio_min": 0.9}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, proc: subprocess.Popen, bound_s: float = 300.0) -> None:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not come up")


def requests(port: int, body: bytes, n: int, headers: dict[str, str], out: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline = time.monotonic() + TIME_BOUND_S
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        try:
            conn.request("POST", "/invocations", body=body, headers=headers)
            resp = conn.getresponse()
        except TimeoutError as exc:
            raise RuntimeError(f"port {port}: no answer in 30 s after {len(out)} requests") from exc
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
        out.append(time.perf_counter() - start)
    conn.close()


def latency(port: int, body: bytes, headers: dict[str, str]) -> list[float]:
    requests(port, body, 50, headers, [])  # warm-up
    out: list[float] = []
    requests(port, body, LATENCY_N, headers, out)
    return out


def throughput(port: int, body: bytes, headers: dict[str, str], threads: int = 4) -> float:
    outs = [[] for _ in range(threads)]
    workers = [
        threading.Thread(target=requests, args=(port, body, THROUGHPUT_N // threads, headers, o))
        for o in outs
    ]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(len(o) for o in outs) / (time.perf_counter() - start)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def save_models(root: Path) -> dict[str, tuple[Path, bytes]]:
    import mlflow.pytorch
    import mlflow.sklearn
    import numpy as np
    import torch
    from sklearn.datasets import load_digits, load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    sk = root / "sklearn"
    mlflow.sklearn.save_model(
        LogisticRegression(max_iter=500).fit(x, y),
        str(sk),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    )
    d, _ = load_digits(return_X_y=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    th = root / "torch"
    example = (d[:2] / 16).astype(np.float32)
    mlflow.pytorch.save_model(net.eval(), str(th), input_example=example)
    return {
        "sklearn": (sk, json.dumps({"inputs": x[:1].tolist()}).encode()),
        "torch": (th, json.dumps({"inputs": (d[:1] / 16).astype(np.float32).tolist()}).encode()),
    }


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_ENFORCE")
    }
    env.update(ASSAY_HOME=str(root / "home"), ASSAY_ACTOR="bench", HF_HUB_OFFLINE="1")
    # `mlflow models serve` runs `uvicorn` from PATH: the venv's
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    os.environ.update(env)
    from assay.core.settings import Settings
    from assay.registry.facade import Registry
    from assay.registry.registration import register_model
    from assay.registry.serving_clients import add_client
    from assay.registry.states import mark, promote

    Registry.initialise(Settings.from_env())
    registry = Registry.open(Settings.from_env())
    from assay.trust.policy import parse_policy_text
    from assay.trust.policy_service import set_policy

    # the defaults, except that the load generator's client is not rate limited
    set_policy(
        registry,
        parse_policy_text(
            "serving: {clients: {bench: {rate_per_second: 1000000, burst: 10000000, "
            "daily_quota: 1000000000000}}}"
        ),
    )
    secret = add_client(registry, "bench")
    results: dict[str, dict] = {}
    procs: list[subprocess.Popen] = []
    try:
        for name, (folder, body) in save_models(root).items():
            version = register_model(
                registry, f"bench-{name}", str(folder), watermark=False
            ).version
            mark(registry, f"bench-{name}", version, "known-good", reason="bench")
            promote(registry, f"bench-{name}", version, alias="production")
            a_port, m_port = free_port(), free_port()
            # to a file, never an unread pipe: a server blocks once a pipe's buffer is full
            logs = (root / f"{name}-servers.log").open("w")
            assay = subprocess.Popen(
                [sys.executable, "-c", "from assay.cli import main; main()", "serve",
                 f"models:/bench-{name}@production", "--port", str(a_port)],
                env=env, stdout=logs, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            mlflow_bin = str(Path(sys.executable).parent / "mlflow")
            plain = subprocess.Popen(
                [mlflow_bin, "models", "serve", "-m", str(folder), "-p", str(m_port),
                 "--env-manager", "local", "-w", "1"],
                env=env, stdout=logs, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            procs += [assay, plain]
            wait_up(a_port, assay)
            wait_up(m_port, plain)
            ctype = {"Content-Type": "application/json"}
            servers = {
                "assay": (a_port, {**ctype, "Authorization": f"Bearer {secret}"}),
                "mlflow": (m_port, ctype),
            }
            lat: dict[str, list[float]] = {"assay": [], "mlflow": []}
            tput: dict[str, list[float]] = {"assay": [], "mlflow": []}
            for _ in range(ROUNDS):
                for server, (port, headers) in servers.items():
                    lat[server] += latency(port, body, headers)
                    tput[server].append(throughput(port, body, headers))
            row = {}
            for server in servers:
                row[server] = {
                    "requests": len(lat[server]),
                    "median_ms": statistics.median(lat[server]) * 1000,
                    "p99_ms": p99(lat[server]) * 1000,
                    "throughput_rps": statistics.median(tput[server]),
                }
            a, m = row["assay"], row["mlflow"]
            row["median_ratio"] = a["median_ms"] / m["median_ms"]
            row["p99_extra_ms"] = a["p99_ms"] - m["p99_ms"]
            row["throughput_ratio"] = a["throughput_rps"] / m["throughput_rps"]
            row["met"] = {
                "median": row["median_ratio"] <= TARGETS["median_ratio_max"],
                "p99": row["p99_extra_ms"] <= TARGETS["p99_extra_ms_max"],
                "throughput": row["throughput_ratio"] >= TARGETS["throughput_ratio_min"],
            }
            results[name] = row
            print(name, json.dumps(row, indent=1), flush=True)
            for p in (assay, plain):
                p.terminate()
                p.wait(30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)
    write_result(
        "serve",
        {
            "models": results,
            "targets": TARGETS,
            "latency_requests_per_round": LATENCY_N,
            "throughput_requests_per_round": THROUGHPUT_N,
            "rounds": ROUNDS,
            "client_threads": 4,
        },
    )


if __name__ == "__main__":
    main()

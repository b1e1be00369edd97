"""Helpers shared by the benchmarks: machine description, timed subprocesses, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
WORK = Path(__file__).parent / "work"
TESTS = Path(__file__).resolve().parents[1] / "tests"
#: The folders pytest puts on its pythonpath (pyproject.toml): the suite's shared helpers.
HELPER_DIRS = (TESTS, TESTS / "registry", TESTS / "rollback", TESTS / "watermark")


def test_helper(name: str):
    """A shared test helper module (``mlflow_server``, ``wm_torch``, ...) imported by name."""
    import importlib

    for folder in HELPER_DIRS:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    return importlib.import_module(name)


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class Run:
    """One timed child process: wall seconds, peak RSS (MB), exit code, output."""

    wall_s: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run(
    cmd: list[str], env: dict | None = None, cwd: Path | None = None, check: bool = True
) -> Run:
    """Run ``cmd`` and measure its wall time and its own peak RSS (via wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return Run(wall, float("nan"), proc.returncode, out.decode(), err.decode())


# Runs one command and reports its wall time and peak RSS on fd 3. The kernel floors a child's
# ru_maxrss at the RSS of the process that forked it (and, with vfork/posix_spawn, at that
# process's own peak), so measuring straight from this (large) benchmark process reported the
# benchmark's own peak for every tool. This small helper forks the command itself: the floor is
# the helper's few MB.
_RSS_HELPER = """
import os, sys, time
out = int(sys.argv[1])
cmd = sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
os.write(out, f"{wall} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
sys.exit(0)
"""


def run_rss(cmd: list[str], env: dict | None = None, check: bool = True) -> Run:
    """Like ``run`` but reports the command's own wall time and peak RSS (via a fork helper)."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _RSS_HELPER, str(write_fd), *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            pass_fds=(write_fd,),
        )
    finally:
        os.close(write_fd)
    _, err = proc.communicate()
    with os.fdopen(read_fd, "rb") as fh:
        report = fh.read().decode().split()
    if proc.returncode != 0 or len(report) != 3:
        raise RuntimeError(f"{cmd!r}: the RSS helper failed: {err.decode()[-2000:]}")
    wall, maxrss_kb, returncode = float(report[0]), int(report[1]), int(report[2])
    if check and returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({returncode}): {err.decode()[-2000:]}")
    return Run(wall, maxrss_kb / 1024, returncode, "", err.decode())


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_result(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine attached."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d"),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def make_random_file(path: Path, size: int, chunk: int = 16 * 2**20) -> None:
    """Write ``size`` pseudo-random bytes (fast: a repeated random block, not compressible by hash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size == size:
        return
    block = os.urandom(chunk)
    with open(path, "wb") as fh:
        left = size
        i = 0
        while left > 0:
            n = min(left, chunk)
            # vary each block so no two chunks are identical
            fh.write(i.to_bytes(8, "little") + block[8:n])
            left -= n
            i += 1

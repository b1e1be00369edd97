"""Run every benchmark (or those named on the command line); each writes benchmarks/results/*.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = [
    "bench_signing",
    "bench_registry",
    "watermark_robustness",
    "bench_tracing",
    "bench_rollback",
    "bench_enforcement",
    "parsers",
    "hostile_inputs",
    "bench_guard",
    "bench_serve",
    "bench_extraction",
]


def main(argv: list[str]) -> int:
    chosen = argv or BENCHMARKS
    failed = []
    for name in chosen:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"-- {name}: not present, skipped")
            continue
        print(f"== {name}", flush=True)
        if subprocess.call([sys.executable, str(script)]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Each hostile input of issue 13 through the real ``assay`` CLI under ``/usr/bin/time -v``.

Regenerates the corpus (tests/watermark/hostile_samples.py) in benchmarks/work/hostile/, with a
throw-away ASSAY_HOME (``assay init`` without MLflow's schema, as the CLI tests do) and a bundle
signed there, then runs every sample once: wall seconds, peak RSS, exit code, stderr lines.
Targets: each ends within 20 s and under 1 GiB RSS, with one ``error:`` line and exit 1 (or 3).

    python benchmarks/hostile_inputs.py   ->   benchmarks/results/hostile_inputs.json
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, WORK, machine, test_helper  # noqa: E402

TIME = "/usr/bin/time"
TARGET_S, TARGET_RSS_MB = 20.0, 1024.0
_INIT = (
    "from assay.registry.facade import Registry\n"
    "Registry._initialise_mlflow = lambda self: None\n"
    "from assay.cli import main\nmain()\n"
)
_ASSAY = "from assay.cli import main; main()"


def main() -> int:
    H = test_helper("hostile_samples")
    root = WORK / "hostile"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSAY_", "MLFLOW_"))}
    env.update(ASSAY_HOME=str(root / "home"), ASSAY_ACTOR="bench@assay", HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-c", _INIT, "init"], env=env, check=True, capture_output=True)
    signed = root / "signed"
    signed.mkdir()
    (signed / "weights.bin").write_bytes(b"weights")
    subprocess.run(
        [sys.executable, "-c", _ASSAY, "sign", str(signed)],
        env=env,
        check=True,
        capture_output=True,
    )
    samples = H.write_corpus(root / "corpus", (signed / "model.sig").read_text())
    rows = {}
    for s in samples:
        args = [*s.args, *(["--json"] if s.json_report else [])]
        proc = subprocess.run(
            [TIME, "-v", sys.executable, "-c", _ASSAY, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        err = proc.stderr
        wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", err)
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
        seconds = (
            int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
            if wall
            else float("nan")
        )
        own = [line for line in err.splitlines() if not line.startswith(("\t", "Command"))]
        row = {
            "command": "assay " + " ".join(a.replace(str(root), "...") for a in args),
            "exit_code": proc.returncode,
            "expected_exit_code": s.exit_code,
            "wall_s": seconds,
            "peak_rss_mb": int(rss.group(1)) / 1024 if rss else float("nan"),
            "stderr": own[:3],
        }
        row["pass"] = (
            proc.returncode == s.exit_code
            and len(own) == 1
            and own[0].startswith("error: ")
            and seconds <= TARGET_S
            and row["peak_rss_mb"] <= TARGET_RSS_MB
        )
        rows[s.name] = row
        print(f"{s.name:40} exit {proc.returncode}  {seconds:6.2f} s  {row['peak_rss_mb']:7.1f} MB")
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "when": date.today().isoformat(),
        "machine": machine(),
        "targets": {"wall_s": TARGET_S, "peak_rss_mb": TARGET_RSS_MB},
        "rows": rows,
    }
    (RESULTS / "hostile_inputs.json").write_text(json.dumps(doc, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r["pass"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

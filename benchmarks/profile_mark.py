"""Where an embedded ``assay mark`` spends its time: a pyinstrument profile, split into parts.

Issue 9 item 5 wants embedded ``mark``/``promote`` within ``import mlflow`` + 1.0 s. This profiles
one ``assay mark x 1 quarantined`` (sqlite:/// MLflow and assay store, a small registered model),
sums the profile's frames into the parts below, and probes what building MLflow's clients costs
after ``import mlflow`` (``MlflowClient``, which opens the tracking store too, against
``ModelRegistryClient``, the registry store only). Writes ``results/mark_profile.json`` with the
load average: on a shared machine absolute seconds stretch, the shares are what to read.
Needs pyinstrument (``pip install pyinstrument``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_registry import ASSAY, CLEARED, MAKE_MODEL, PY  # noqa: E402
from common import WORK, run, write_result  # noqa: E402

PROBE_REPS = int(os.environ.get("BENCH_REPS", "3"))

PROBE = """
import sys, time
import mlflow
uri = sys.argv[2]
start, cpu = time.perf_counter(), time.process_time()
if sys.argv[1] == "MlflowClient":
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
else:
    from mlflow.tracking._model_registry.client import ModelRegistryClient
    client = ModelRegistryClient(uri, uri)
client.get_registered_model("x")
print(time.perf_counter() - start, time.process_time() - cpu)
"""

#: part -> (function, file path ending) of the frames it sums (outermost occurrences only).
PARTS: dict[str, tuple[str, str]] = {
    "import mlflow (mlflow/__init__)": ("<module>", "mlflow/__init__.py"),
    "MlflowClient(...): tracking store": ("__init__", "mlflow/tracking/client.py"),
    "ModelRegistryClient(...): registry store (its import: SQLAlchemy ORM, alembic, mappers)": (
        "__init__",
        "mlflow/tracking/_model_registry/client.py",
    ),
    "mlflow: set_model_version_tag (with its prompt check and the registry client)": (
        "set_model_version_tag",
        "mlflow/tracking/client.py",
    ),
    "assay: import registry/states.py (SQLAlchemy, assay's ORM tables)": (
        "<module>",
        "registry/states.py",
    ),
    "assay: import sqlalchemy (MLflow's store needs it too)": (
        "<module>",
        "sqlalchemy/__init__.py",
    ),
    "assay: import store/models.py (assay's ORM tables)": ("<module>", "store/models.py"),
    "assay: open_registry (store open, schema check)": ("open_registry", "cli/common.py"),
    "assay: mark (rules, state row, audit, then the MLflow tag)": ("mark", "registry/states.py"),
    "assay: mirror_state (the MLflow tag, mlflow import included)": (
        "mirror_state",
        "registry/states.py",
    ),
}


def frame_sums(root: dict) -> dict[str, float]:
    """Seconds per part: the time of each matching frame not nested in another match."""
    sums = dict.fromkeys(PARTS, 0.0)

    def walk(node: dict, inside: frozenset[str]) -> None:
        path = node.get("file_path", "")
        now = set(inside)
        for part, (fn, ending) in PARTS.items():
            if node["function"] == fn and path.endswith(ending) and part not in inside:
                sums[part] += node["time"]
                now.add(part)
        for child in node.get("children", []):
            walk(child, frozenset(now))

    walk(root, frozenset())
    return {k: round(v, 3) for k, v in sums.items()}


def main() -> dict:
    work = WORK / "mark_profile"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(HF_HUB_OFFLINE="1", ASSAY_ACTOR="bench@assay", ASSAY_HOME=str(work / "home"))
    model = work / "small-model"
    run([PY, "-c", MAKE_MODEL, str(model)], env)
    run([ASSAY, "init"], env)
    run([ASSAY, "register", "x", str(model), "--no-watermark"], env)
    uri = f"sqlite:///{(work / 'home' / 'mlflow.db').resolve()}"

    load_before = os.getloadavg()
    out = work / "mark.json"
    cmd = [PY, "-m", "pyinstrument", "-r", "json", "-o", str(out)]
    run([*cmd, ASSAY, "mark", "x", "1", "quarantined", "--reason", "profile"], env)
    profile = json.loads(out.read_text())
    probe: dict[str, dict[str, list[float]]] = {}
    for _ in range(PROBE_REPS):  # interleaved, so a changing load stretches both alike
        for which in ("MlflowClient", "ModelRegistryClient"):
            wall, cpu = run([PY, "-c", PROBE, which, uri], env).stdout.split()[-2:]
            got = probe.setdefault(which, {"wall_s": [], "cpu_s": []})
            got["wall_s"].append(round(float(wall), 3))
            got["cpu_s"].append(round(float(cpu), 3))
    load_after = os.getloadavg()

    import pyinstrument

    total = profile["root_frame"]["time"]
    parts = frame_sums(profile["root_frame"])
    payload = {
        "what": (
            f"pyinstrument {pyinstrument.__version__} of one embedded `assay mark x 1 "
            "quarantined` (sqlite:/// MLflow and assay store); parts are frame sums (a part "
            "nested in another is counted in both)"
        ),
        "total_s": round(total, 3),
        "cpu_s": round(profile["cpu_time"], 3),
        "parts_s": parts,
        "shares": {k: round(v / total, 3) for k, v in parts.items()},
        "client_probe": {
            "what": (
                f"{PROBE_REPS} fresh processes each, interleaved: after `import mlflow`, build "
                "the client and call get_registered_model once (wall and CPU seconds of that "
                "part alone; CPU seconds stretch far less under load)"
            ),
            **probe,
        },
        "load_average": {"before": list(load_before), "after": list(load_after)},
    }
    path = write_result("mark_profile", payload)
    width = max(map(len, parts))
    print(f"total {total:.2f} s (cpu {profile['cpu_time']:.2f} s)")
    for k, v in parts.items():
        print(f"{k:{width}} {v:7.3f} s {v / total:6.1%}")
    print(f"client probe: {probe}")
    print(f"load average before {load_before}, after {load_after}")
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()

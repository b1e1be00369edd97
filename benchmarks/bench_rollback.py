"""`assay rollback` with 1,000 registered versions of one model, and a data-poisoning incident over
20 affected models; embedded (sqlite MLflow) and server mode (a real ``mlflow server``).

Targets (issue 5): rollback end to end, excluding the re-hash of the target's bytes, at most 1.0 s
in server mode and at most 1.0 s more than ``python -c 'import mlflow'`` (measured in the same
run) embedded; the incident over 20 models at most 10 s plus hashing. Reported separately: the
time from command start to the serving alias moved, and the whole command.

How the 1,000 versions are built (bulk, but real): one MLflow run holds 1,000 artifact folders
(two small files each, unique bytes, logged with ``log_artifacts``); each is a real MLflow model
version (``create_version`` with that folder as source and assay's tags); each has a real signed
OMS bundle of its manifest and a binding, written to assay's store by the same ``_record`` that
``assay register`` uses (one transaction and one audit event per version), trained on dataset
``bench-data@1``. The per-version bundle file beside the model in MLflow (``_finish``) is skipped:
verification reads the store. Versions 1-900 are marked known-good (``set_state``, audited),
901-999 are left registered (so the planner rejects 99 candidates before it finds v900), v1000
serves ``production``. Target bytes are two tiny files, so the target re-hash is ~1 ms: the
measured times are, to that precision, the times excluding it.

Each rollback measurement resets ``production`` to v1000 in MLflow's database first (the
rollback it undoes stays in the audit log; the next rollback plans afresh from v1000). Server
mode serves this same MLflow database through ``mlflow server``; the versions' sources are local
``file:`` URIs, which assay reads directly in both modes.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import WORK, median, run, test_helper, write_result  # noqa: E402

PY = sys.executable
ASSAY = str(Path(PY).with_name("assay"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
VERSIONS = int(os.environ.get("BENCH_VERSIONS", "1000"))
KNOWN_GOOD_UP_TO = VERSIONS - 100
INCIDENT_MODELS = 20
SERVER_S, EMBEDDED_MARGIN_S, INCIDENT_S = 1.0, 1.0, 10.0
MODEL, DATASET, POISONED = "bench-model", "bench-data", "bench-poison"
CLEARED = ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*CLEARED, "ASSAY_TEST_CRASH_AT")}
    env.update(ASSAY_HOME=str(home), ASSAY_ACTOR="bench@assay", HF_HUB_OFFLINE="1", **extra)
    return env


def _folder(path: Path, i: int) -> Path:
    (path / "sub").mkdir(parents=True, exist_ok=True)
    (path / "weights.bin").write_bytes(i.to_bytes(4, "little") + os.urandom(2044))
    (path / "sub" / "config.json").write_text(json.dumps({"version": i}))
    return path


def build(home: Path) -> dict:
    """The registry described in the module docstring; returns build timings."""
    os.environ.update(_env(home))
    from assay.core.settings import Settings
    from assay.integrity.manifest import build_manifest
    from assay.registry.datasets import register_dataset
    from assay.registry.facade import Registry
    from assay.registry.registration import _record, register_model
    from assay.registry.states import mark, move_alias
    from assay.registry.versions import require_artifact, set_state
    from assay.store.models import Artifact
    from assay.trust.signing import sign_manifest

    started = time.perf_counter()
    Registry.initialise(Settings.from_env())
    reg = Registry.open(Settings.from_env())
    src = home.parent / "src"
    register_dataset(reg, DATASET, _folder(src / "ds1", 0))
    with reg.store.session(readonly=True) as session:
        ds_id = require_artifact(session, "dataset", DATASET, "1").id
    key, _ = reg.keys.signing_key()
    backend = reg.backend
    client = backend._client
    run_ = client.create_run(backend._experiment(), run_name=f"{MODEL}-bulk")
    run_id, artifact_uri = run_.info.run_id, run_.info.artifact_uri.rstrip("/")
    lineage = {"datasets": [{"name": DATASET, "version": "1", "root": None}], "parents": []}
    for i in range(1, VERSIONS + 1):
        folder = _folder(src / f"v{i}", i)
        manifest = build_manifest(folder)
        bundle = sign_manifest(manifest, key)
        client.log_artifacts(run_id, str(folder), f"v{i}")
        info = backend.create_version(
            MODEL,
            f"{artifact_uri}/v{i}",
            run_id=run_id,
            tags={
                "assay.state": "registered",
                "assay.manifest": manifest.root_digest,
                "assay.key_id": key.key_id,
            },
        )
        assert info.version == str(i), info
        _record(
            reg,
            MODEL,
            info,
            manifest_root=manifest.root_digest,
            bundle=bundle,
            key=key,
            dataset_ids=[ds_id],
            parent_ids=[],
            lineage=lineage,
            outcome=None,
            files=len(manifest.resources),
        )
        shutil.rmtree(folder)
    client.set_terminated(run_id)
    with reg.store.session() as session:
        for i in range(1, KNOWN_GOOD_UP_TO + 1):
            artifact = require_artifact(session, "model", MODEL, str(i))
            set_state(reg, session, artifact, "known-good", reason="bench: CI verified")
    move_alias(reg, MODEL, "production", str(VERSIONS), via="register", reason="bench")
    bulk_s = time.perf_counter() - started

    # The incident world: 20 models, v1 on bench-poison@1 (known-good), v2 on @2 serving.
    started = time.perf_counter()
    from assay.core.refs import parse_dataset_ref

    register_dataset(reg, POISONED, _folder(src / "p1", 1))
    register_dataset(reg, POISONED, _folder(src / "p2", 2))
    for k in range(INCIDENT_MODELS):
        name = f"svc-{k:02d}"
        for v, ds in ((1, "1"), (2, "2")):
            register_model(
                reg,
                name,
                str(_folder(src / f"{name}-{v}", 10_000 + k * 10 + v)),
                datasets=[parse_dataset_ref(f"{POISONED}@{ds}", require_version=True)],
                alias="production" if v == 2 else None,
                watermark=False,
            )
        mark(reg, name, "1", "known-good", reason="bench")
    incident_build_s = time.perf_counter() - started
    with reg.store.session(readonly=True) as session:
        count = session.query(Artifact).filter(Artifact.name == MODEL).count()
    assert count == VERSIONS, count
    assert len(backend.list_versions(MODEL)) == VERSIONS
    return {"bulk_build_s": round(bulk_s, 1), "incident_build_s": round(incident_build_s, 1)}


def reset_alias(home: Path) -> None:
    conn = sqlite3.connect(home / "mlflow.db", timeout=30)
    try:
        with conn:
            conn.execute(
                "UPDATE registered_model_aliases SET version = ? WHERE name = ? AND alias = ?",
                (VERSIONS, MODEL, "production"),
            )
    finally:
        conn.close()


def measure_rollback(home: Path, env: dict[str, str]) -> dict:
    runs = []
    for _ in range(REPS):
        reset_alias(home)
        r = run([ASSAY, "rollback", MODEL, "--yes", "--json", "--reason", "bench"], env=env)
        data = json.loads(r.stdout)
        assert data["moved"] and data["to_version"] == str(KNOWN_GOOD_UP_TO), data
        after_move = data["seconds_total"] - data["seconds_to_alias_moved"]
        runs.append(
            {
                "command_s": r.wall_s,
                "alias_moved_s": r.wall_s - after_move,  # from process start
                "in_process_to_alias_moved_s": data["seconds_to_alias_moved"],
                "in_process_total_s": data["seconds_total"],
            }
        )
    return {
        "command_s": round(median([x["command_s"] for x in runs]), 3),
        "alias_moved_s": round(median([x["alias_moved_s"] for x in runs]), 3),
        "in_process_to_alias_moved_s": round(
            median([x["in_process_to_alias_moved_s"] for x in runs]), 3
        ),
        "in_process_total_s": round(median([x["in_process_total_s"] for x in runs]), 3),
        "runs": [{k: round(v, 3) for k, v in x.items()} for x in runs],
    }


def measure_incident(home: Path, env: dict[str, str]) -> dict:
    r = run(
        [
            ASSAY,
            "incident",
            "run",
            "data-poisoning",
            "--set",
            f"dataset={POISONED}@2",
            "--set",
            "reason=bench",
            "--yes",
            "--json",
        ],
        env=env,
    )
    data = json.loads(r.stdout)
    assert data["status"] == "completed", data
    rollbacks = next(
        s for s in data["steps"] if s["step_id"] == "rollback" and s["item_index"] is None
    )
    moved = sum(1 for item in rollbacks["outputs"]["items"] if item and item.get("moved"))
    assert moved == INCIDENT_MODELS, moved
    return {
        "command_s": round(r.wall_s, 3),
        "affected_models": INCIDENT_MODELS,
        "aliases_moved": moved,
    }


def import_mlflow_s() -> float:
    return round(median([run([PY, "-c", "import mlflow"]).wall_s for _ in range(REPS)]), 3)


def main() -> dict:
    work = WORK / "rollback"
    shutil.rmtree(work, ignore_errors=True)
    home = work / "home"
    home.parent.mkdir(parents=True)
    t0 = time.perf_counter()
    built = build(home)
    import_s = import_mlflow_s()
    embedded = measure_rollback(home, _env(home))
    # The embedded incident runs on a copy (the server-mode one on the original, afterwards).
    for db in ("assay.db", "mlflow.db"):
        sqlite3.connect(home / db).execute("PRAGMA wal_checkpoint(TRUNCATE)").connection.close()
    copy = work / "home-copy"
    shutil.copytree(home, copy)
    incident_embedded = measure_incident(copy, _env(copy))

    helper = test_helper("mlflow_server")
    with helper.MlflowServer(home) as server:  # serves home/mlflow.db and home/artifacts
        server_env = _env(home, MLFLOW_TRACKING_URI=server.url)
        served = measure_rollback(home, server_env)
        incident_server = measure_incident(home, server_env)
    results = {
        "versions": VERSIONS,
        "reps": REPS,
        "build": built,
        "import_mlflow_s": import_s,
        "rollback_embedded": embedded,
        "rollback_server": served,
        "incident_20_models_embedded": incident_embedded,
        "incident_20_models_server": incident_server,
        "targets": {
            "rollback_server_s": SERVER_S,
            "rollback_embedded_s": round(import_s + EMBEDDED_MARGIN_S, 3),
            "incident_s": INCIDENT_S,
        },
        "met": {
            "rollback_server": served["command_s"] <= SERVER_S,
            "rollback_embedded": embedded["command_s"] <= import_s + EMBEDDED_MARGIN_S,
            "incident_server": incident_server["command_s"] <= INCIDENT_S,
            "incident_embedded": incident_embedded["command_s"] <= INCIDENT_S,
        },
        "total_benchmark_s": round(time.perf_counter() - t0, 1),
    }
    return results


if __name__ == "__main__":
    out = main()
    path = write_result("rollback", out)
    print(json.dumps(out, indent=2))
    print(f"wrote {path}")

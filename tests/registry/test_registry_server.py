"""Server mode: assay against a real ``mlflow server`` (REST, proxied artifacts).

Registration, verify by URI in a process that never imports mlflow, tampering in the server's
artifact store, and four ``assay register`` processes at once on one model name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.server]

ASSAY = str(Path(sys.executable).with_name("assay"))
CLEARED = (
    "ASSAY_DB_URL",
    "MLFLOW_TRACKING_URI",
    "ASSAY_KEY",
    "ASSAY_KEY_PASSPHRASE",
    "ASSAY_ENFORCE",
)

# Runs the CLI in-process and reports whether anything imported mlflow.
NO_MLFLOW = """
import sys
from assay.cli import cli
try:
    cli.main(sys.argv[1:], prog_name="assay")
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
print("MLFLOW_IMPORTED=" + str(any(m == "mlflow" or m.startswith("mlflow.") for m in sys.modules)))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def env(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An ASSAY_HOME initialised against the server; the environment for subprocesses."""
    home = tmp_path_factory.mktemp("server-mode") / "home"
    full = {k: v for k, v in os.environ.items() if k not in CLEARED}
    full.update(
        ASSAY_HOME=str(home),
        ASSAY_ACTOR="test@assay",
        HF_HUB_OFFLINE="1",
        MLFLOW_TRACKING_URI=mlflow_server,
    )
    init = subprocess.run([ASSAY, "init"], capture_output=True, text=True, env=full, timeout=120)
    assert init.returncode == 0, init.stderr
    assert not (home / "mlflow.db").exists()  # MLflow's state lives in the server
    yield full


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ASSAY, *args], capture_output=True, text=True, env=env, timeout=timeout)


def run_without_mlflow(
    env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", NO_MLFLOW, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return proc, time.perf_counter() - start


def make_model(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(content)
    (folder / "MLmodel").write_text("flavors: {}\n")
    return folder


def server_artifact(tmp_path_factory: pytest.TempPathFactory, source: str) -> Path | None:
    """The file behind ``mlflow-artifacts:/...`` in the session server's artifacts folder."""
    assert source.startswith("mlflow-artifacts:/"), source
    rel = source.removeprefix("mlflow-artifacts:").lstrip("/")
    base = tmp_path_factory.getbasetemp()
    for root in sorted(base.glob("mlflow-server*/artifacts")):
        if (root / rel).exists():
            return root / rel
    return None


def test_register_and_verify_without_importing_mlflow(
    env: dict[str, str], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    name = f"srv-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.csv").write_text("a,b\n1,2\n")
    ds = run(env, "dataset", "register", f"{name}-data", str(data), "--json")
    assert ds.returncode == 0, ds.stderr

    source = make_model(tmp_path / "m", b"server weights" * 1000)
    reg = run(
        env,
        "register",
        name,
        str(source),
        "--dataset",
        f"{name}-data@1",
        "--no-watermark",
        "--json",
    )
    assert reg.returncode == 0, reg.stderr
    result = json.loads(reg.stdout)
    assert result["version"] == "1"
    assert result["source"].startswith("mlflow-artifacts:/")

    proc, wall = run_without_mlflow(env, "verify", f"models:/{name}/1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"OK models:/{name}/1: 2 files match" in proc.stdout
    assert "MLFLOW_IMPORTED=False" in proc.stdout
    assert wall < 5.0, f"verify took {wall:.2f} s"
    proc, _ = run_without_mlflow(env, "verify", f"dataset:{name}-data@1")
    assert proc.returncode == 0 and "MLFLOW_IMPORTED=False" in proc.stdout, proc.stdout

    # by alias (set directly on the server: promote is another command)
    from assay.mlflow_access.rest import RestBackend

    assert run(env, "mark", name, "1", "known-good", "--reason", "evaluated").returncode == 0
    RestBackend(env["MLFLOW_TRACKING_URI"]).set_alias(name, "production", "1")
    proc, _ = run_without_mlflow(env, "verify", f"models:/{name}@production")
    assert proc.returncode == 0 and "MLFLOW_IMPORTED=False" in proc.stdout, proc.stdout

    # errors stay one line, exit 1
    for args in ((f"models:/{name}/2",), (f"models:/{name}@staging",), ("models:/nobody-here/1",)):
        proc, _ = run_without_mlflow(env, "verify", *args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1

    # one byte changed in the server's artifact store
    weights = server_artifact(tmp_path_factory, result["source"] + "/weights.bin")
    if weights is None:
        pytest.skip("the server's artifact folder is not reachable from this test")
    data_ = bytearray(weights.read_bytes())
    data_[0] ^= 0x01
    weights.write_bytes(bytes(data_))
    proc, _ = run_without_mlflow(env, "verify", f"models:/{name}@production")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "modified  weights.bin" in proc.stdout
    assert "MLFLOW_IMPORTED=False" in proc.stdout

    # and deleted from it
    weights.unlink()
    proc, _ = run_without_mlflow(env, "verify", f"models:/{name}/1")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "weights.bin" in proc.stdout + proc.stderr


def test_four_concurrent_registers_on_the_server(env: dict[str, str], tmp_path: Path) -> None:
    name = f"conc-{uuid.uuid4().hex[:8]}"
    sources = [make_model(tmp_path / f"c{i}", os.urandom(4096)) for i in range(4)]
    procs = [
        subprocess.Popen(
            [ASSAY, "register", name, str(src), "--no-watermark", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for src in sources
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out))
    assert sorted(int(r["version"]) for r in results) == [1, 2, 3, 4]
    for r in results:
        proc = run(env, "verify", r["uri"])
        assert proc.returncode == 0, proc.stdout + proc.stderr
    audit = run(env, "audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_interrupted_registration_on_the_server(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.core.settings import Settings
    from assay.registry import registration
    from assay.registry.facade import Registry

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for var in CLEARED:
        if var not in env:
            monkeypatch.delenv(var, raising=False)
    registry = Registry.open(Settings.from_env())
    name = f"crash-{uuid.uuid4().hex[:8]}"
    source = make_model(tmp_path / "m", b"interrupted on the server")
    with monkeypatch.context() as mp:
        mp.setattr(registration, "_record", lambda *a, **k: (_ for _ in ()).throw(OSError("cut")))
        with pytest.raises(OSError):
            registration.register_model(registry, name, str(source), watermark=False)
    [pending] = registry.backend.list_versions(name)
    assert registration.PENDING_TAG in pending.tags and pending.aliases == []
    done = registration.register_model(registry, name, str(source), watermark=False)
    assert (done.version, done.reused) == ("1", False)
    [version] = registry.backend.list_versions(name)
    assert registration.PENDING_TAG not in version.tags
    again = registration.register_model(registry, name, str(source), watermark=False)
    assert again.reused and again.version == "1"


def test_failed_upload_to_the_server_ends_the_run_failed(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The REST backend: an upload cut after the first file ends the run FAILED; a RUNNING run
    an interrupted process left is found through runs/search and ended by the re-run."""
    from assay.core.settings import Settings
    from assay.registry import registration
    from assay.registry.facade import Registry

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for var in CLEARED:
        if var not in env:
            monkeypatch.delenv(var, raising=False)
    registry = Registry.open(Settings.from_env())
    rest = registry.backend.rest
    name = f"cut-{uuid.uuid4().hex[:8]}"
    source = make_model(tmp_path / "m", b"uploaded to the server, then cut")
    real = rest.upload_artifact
    calls = []

    def cut(local, path):
        calls.append(path)
        if len(calls) > 1:
            raise ConnectionResetError("connection reset by peer")
        real(local, path)

    with monkeypatch.context() as mp:
        mp.setattr(rest, "upload_artifact", cut)
        with pytest.raises(ConnectionResetError):
            registration.register_model(registry, name, str(source), watermark=False)
        calls.clear()
        # kill -9: nothing runs to end the run
        mp.setattr("assay.mlflow_access.rest.end_quietly", lambda end, run_id: None)
        with pytest.raises(ConnectionResetError):
            registration.register_model(registry, name, str(source), watermark=False)
    runs = rest.call(
        "POST",
        "runs/search",
        {
            "experiment_ids": [registry.backend._experiment()],
            "filter": f"tags.`assay.model` = '{name}'",
        },
    )["runs"]
    statuses = sorted(r["info"]["status"] for r in runs)
    assert statuses == ["FAILED", "RUNNING"]
    [orphan] = registry.backend.running_runs({"assay.model": name})

    done = registration.register_model(registry, name, str(source), watermark=False)
    assert done.version == "1"
    assert registry.backend.get_run(orphan.run_id).status == "FAILED"
    assert registry.backend.get_run(done.run_id).status == "FINISHED"
    assert registry.backend.running_runs({"assay.model": name}) == []
    proc = run(env, "verify", f"models:/{name}/1")
    assert proc.returncode == 0, proc.stdout + proc.stderr

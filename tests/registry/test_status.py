"""`status`: versions, aliases, freezes, and drift between assay's store and a real MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import registry_fixtures as fx  # noqa: E402

from assay.core.errors import NotFoundError
from assay.registry.states import freeze, mark, promote
from assay.registry.status import DriftKind, status

world = fx.home_fixture()


@pytest.fixture
def reg(world: tuple[Path, Any]) -> Any:
    return world[1]


def kinds(report: Any, model: str | None = None) -> list[tuple[str, str | None]]:
    return sorted(
        (d.kind.value, d.version) for d in report.drift if model is None or d.model == model
    )


@pytest.mark.slow
def test_clean_model_has_no_drift(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fx.stub_verify(monkeypatch)
    data, name = fx.unique("data"), fx.unique("clean")
    fx.dataset(reg, data, tmp_path)
    fx.model(reg, name, tmp_path, datasets=(f"{data}@1",))
    fx.model(reg, name, tmp_path, parents=(f"{name}/1",), alias="staging")
    mark(reg, name, "1", "known-good", reason="CI")
    promote(reg, name, "1")
    freeze(reg, name, reason="quiet period")

    report = status(reg, name)
    assert report.ok and report.drift == []
    (model,) = report.models
    assert model.aliases == {"production": "1", "staging": "2"}
    assert model.frozen and model.frozen["reason"] == "quiet period"
    v1, v2 = model.versions
    assert (v1.record.state, v1.aliases, v1.record.datasets) == (
        "known-good",
        ["production"],
        [f"{data}@1"],
    )
    assert v1.record.key_id and v2.record.parents == [f"{name}/1"]
    assert [d.name for d in report.datasets] == [data]
    out = report.to_dict()
    assert out["models"][0]["frozen"] is True and out["ok"] is True
    assert "no drift" in report.summary()


@pytest.mark.slow
def test_alias_moved_with_plain_mlflow(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fx.stub_verify(monkeypatch)
    name = fx.unique("moved")
    for _ in range(3):
        fx.model(reg, name, tmp_path)
    mark(reg, name, "2", "known-good", reason="CI")
    promote(reg, name, "2")
    promote(reg, name, "2", alias="staging")
    backend = reg.backend
    backend.set_alias(name, "production", "3")  # moved behind assay's back
    backend.set_alias(name, "canary", "1")  # set with no recorded move
    backend.delete_alias(name, "staging")  # deleted behind assay's back

    report = status(reg, name)
    found = {d.detail.split()[1]: d for d in report.drift if d.kind == DriftKind.ALIAS_MOVED}
    assert set(found) == {"production", "canary", "staging"}
    assert found["production"].version == "3"
    assert "assay last moved it to 2" in found["production"].detail
    assert "no recorded move" in found["canary"].detail
    assert "deleted" in found["staging"].detail
    assert "3 drift finding(s)" in report.summary()


@pytest.mark.slow
def test_tag_edited_behind_assays_back(reg: Any, tmp_path: Path) -> None:
    name = fx.unique("tags")
    fx.model(reg, name, tmp_path)
    fx.model(reg, name, tmp_path)
    reg.backend.set_version_tag(name, "1", "assay.state", "known-good")
    reg.backend.delete_version_tag(name, "2", "assay.manifest")
    report = status(reg, name)
    details = [d.detail for d in sorted(report.drift, key=lambda d: d.version)]
    assert kinds(report) == [("tag-mismatch", "1"), ("tag-mismatch", "2")]
    assert "assay.state is 'known-good' in MLflow, store says 'registered'" in details[0]
    assert "assay.manifest is missing" in details[1]


@pytest.mark.slow
def test_unsigned_and_pending_versions(reg: Any, tmp_path: Path) -> None:
    name = fx.unique("unsigned")
    fx.model(reg, name, tmp_path)
    fx.mlflow_only_version(reg, name, tmp_path)
    fx.mlflow_only_version(reg, name, tmp_path, tags={"assay.pending": "ab" * 32})
    report = status(reg, name)
    assert kinds(report) == [("pending-registration", "3"), ("unsigned-version", "2")]
    (model,) = report.models
    assert [v.record.version for v in model.versions] == ["1"]


@pytest.mark.slow
def test_interrupted_first_registration_is_pending_not_unmanaged(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash left MLflow version 1 tagged ``assay.pending`` and nothing in the store."""
    from assay.registry import registration

    name = fx.unique("first")
    with monkeypatch.context() as mp:
        mp.setattr(registration, "_record", lambda *a, **k: (_ for _ in ()).throw(OSError("x")))
        with pytest.raises(OSError):
            fx.model(reg, name, tmp_path)
    fx.mlflow_only_version(reg, name, tmp_path)  # and one more added with plain MLflow
    for report in (status(reg, name), status(reg)):
        assert kinds(report, name) == [("pending-registration", "1"), ("unsigned-version", "2")]
        assert name not in report.unmanaged
        (model,) = [m for m in report.models if m.name == name]
        assert (model.pending, model.versions) == (["1"], [])
        finding = next(d for d in report.drift if d.model == name)
        assert finding.kind is DriftKind.PENDING_REGISTRATION
        assert finding.to_dict()["kind"] == "pending-registration"


@pytest.mark.slow
def test_unmanaged_model_is_one_finding(reg: Any, tmp_path: Path) -> None:
    name = fx.unique("managed")
    fx.model(reg, name, tmp_path)
    stranger = fx.unique("stranger")
    fx.mlflow_only_version(reg, stranger, tmp_path)
    fx.mlflow_only_version(reg, stranger, tmp_path)
    report = status(reg)
    assert [d.to_dict() for d in report.drift if d.model == stranger] == [
        {
            "kind": "unmanaged",
            "model": stranger,
            "version": None,
            "detail": "registered in MLflow but never through assay",
        }
    ]
    assert stranger in report.unmanaged and name in {m.name for m in report.models}
    # Asked by name: the same single finding.
    assert kinds(status(reg, stranger)) == [("unmanaged", None)]
    with pytest.raises(NotFoundError, match="no model named"):
        status(reg, fx.unique("nowhere"))


@pytest.mark.slow
def test_deep_reports_changed_bytes_and_serving_bad_version(reg: Any, tmp_path: Path) -> None:
    """The real verify_version, re-reading the artifact store."""
    name = fx.unique("deep")
    fx.model(reg, name, tmp_path)
    fx.model(reg, name, tmp_path, alias="production")
    assert status(reg, name, deep=True).ok
    fx.tamper(reg, name, "2")
    assert status(reg, name).ok  # shallow status does not re-read bytes
    deep = status(reg, name, deep=True)
    assert kinds(deep) == [("bytes-changed", "2")]
    assert "weights.bin" in deep.drift[0].detail
    assert deep.integrity_failures and deep.models[0].versions[1].verified is False
    mark(reg, name, "2", "compromised", reason="bytes changed")
    assert ("serving-bad-version", "2") in kinds(status(reg, name))


def test_incident_modules_do_not_import_mlflow() -> None:
    """Server mode must not pay for `import mlflow`: the modules themselves never import it."""
    code = (
        "import sys\n"
        "import assay.registry.states, assay.registry.status, assay.registry.lineage\n"
        "import assay.cli.registry_cmds\n"
        "assert not any(m == 'mlflow' or m.startswith('mlflow.') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('mlflow'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- server mode: a real `mlflow server`, commands in processes that never import mlflow ----------

_NO_MLFLOW = """
import sys
from assay.cli import cli
from assay.cli.registry_cmds import COMMANDS
for command in COMMANDS:
    if command.name not in cli.commands:
        cli.add_command(command)
try:
    cli.main(sys.argv[1:], prog_name="assay")
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
print("MLFLOW_IMPORTED=" + str(any(m == "mlflow" or m.startswith("mlflow.") for m in sys.modules)))
sys.exit(code)
"""


@pytest.mark.slow
@pytest.mark.server
def test_server_mode_incident_commands_never_import_mlflow(
    mlflow_server: str, tmp_path: Path
) -> None:
    import json
    import os
    import time

    assay_bin = str(Path(sys.executable).with_name("assay"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ASSAY_DB_URL", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE", "ASSAY_ENFORCE")
    }
    env.update(
        ASSAY_HOME=str(tmp_path / "home"),
        ASSAY_ACTOR="test@assay",
        HF_HUB_OFFLINE="1",
        MLFLOW_TRACKING_URI=mlflow_server,
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [assay_bin, *args], capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    def lean(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _NO_MLFLOW, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        elapsed = time.perf_counter() - start
        assert proc.returncode == 0, proc.stderr
        assert "MLFLOW_IMPORTED=False" in proc.stdout, proc.stdout
        return proc, elapsed

    run("init")
    name, data = fx.unique("srv"), fx.unique("srvdata")
    run("dataset", "register", data, str(fx.folder(tmp_path, "data")))
    run("register", name, str(fx.folder(tmp_path, "m")), "--dataset", f"{data}@1", "--no-watermark")
    run("register", name, str(fx.folder(tmp_path, "m")), "--no-watermark")

    timings = {}
    _, timings["mark"] = lean("mark", name, "1", "known-good", "--reason", "CI")
    _, timings["promote"] = lean("promote", name, "1", "--json")
    proc, timings["status"] = lean("status", name, "--json")
    doc = json.loads(proc.stdout.rsplit("MLFLOW_IMPORTED", 1)[0])
    assert doc["ok"], doc["drift"]
    (model,) = doc["models"]
    assert model["aliases"] == {"production": "1"}
    # Everything: the shared server holds other tests' models, which are unmanaged here.
    proc, timings["status-all"] = lean("status", "--json")
    doc = json.loads(proc.stdout.rsplit("MLFLOW_IMPORTED", 1)[0])
    assert [d for d in doc["drift"] if d["model"] == name] == []
    assert {d["kind"] for d in doc["drift"]} <= {"unmanaged"}
    proc, timings["lineage"] = lean("lineage", f"dataset:{data}@1", "--json")
    assert json.loads(proc.stdout.rsplit("MLFLOW_IMPORTED", 1)[0])["serving"] == [
        {"model": name, "alias": "production", "version": "1"}
    ]
    _, timings["freeze"] = lean("freeze", name, "--reason", "drill")
    print("server-mode wall times (s):", {k: round(v, 2) for k, v in timings.items()})


def test_status_reads_the_tag_registration_writes() -> None:
    from assay.registry import registration
    from assay.registry import status as status_module

    assert status_module.PENDING_TAG == registration.PENDING_TAG

"""`assay register`, `assay dataset register|list|show` and `assay verify models:/...|dataset:...`
as a user runs them: output, one-line errors and exit codes (0 ok, 1 error, 3 integrity), and
four `assay register` processes at once on one model name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from assay.cli import cli
from assay.core.settings import Settings
from assay.mlflow_access.artifacts import local_path_of
from assay.registry.facade import Registry

ASSAY = str(Path(sys.executable).with_name("assay"))
CLEARED = ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One `assay init` for the module; the environment points at it while the module runs."""
    home = tmp_path_factory.mktemp("cli") / "home"
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(home))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        mp.setenv("HF_HUB_OFFLINE", "1")
        result = CliRunner().invoke(cli, ["init"])
        assert result.exit_code == 0, result.output
        yield home


def assay(*args: str) -> tuple[int, str, str]:
    """Run a command in this process (MLflow is imported once for the module)."""
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def make_model(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(content)
    (folder / "config.json").write_text("{}")
    return folder


def store_folder(name: str, version: str) -> Path:
    backend = Registry.open(Settings.from_env()).backend
    path = local_path_of(backend.get_version(name, version).source)
    assert path is not None and path.is_dir()
    return path


def audit_size() -> int:
    return Registry.open(Settings.from_env()).audit.tree_size()


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_dataset_register_list_show(home: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("a,b\n1,2\n")
    code, out, _ = assay("dataset", "register", "customers", str(data), "--json")
    assert code == 0
    record = json.loads(out)
    assert (record["name"], record["version"], record["ref"]) == (
        "customers",
        "1",
        "dataset:customers@1",
    )
    code, out, _ = assay("dataset", "register", "customers", str(data))
    assert code == 0 and "registered dataset:customers@2" in out

    code, out, _ = assay("dataset", "list", "--json")
    assert code == 0
    assert [r["ref"] for r in json.loads(out) if r["name"] == "customers"] == [
        "dataset:customers@1",
        "dataset:customers@2",
    ]
    code, out, _ = assay("dataset", "list")
    assert code == 0 and "customers" in out
    code, out, _ = assay("dataset", "show", "customers", "--json")
    assert code == 0 and json.loads(out)["version"] == "2"
    code, out, _ = assay("dataset", "show", "customers@1")
    assert code == 0 and "dataset:customers@1" in out
    code, _, err = assay("dataset", "show", "nobody@1")
    assert code == 1 and "no dataset named 'nobody'" in one_error_line(err)
    code, _, _ = assay("dataset", "register", "customers", str(tmp_path / "missing"))
    assert code == 2  # click's own usage error: the path does not exist

    code, out, _ = assay("verify", "dataset:customers@1")
    assert code == 0 and "OK dataset:customers@1" in out


def test_register_and_verify(home: Path, tmp_path: Path) -> None:
    source = make_model(tmp_path / "m", b"churn weights v1")
    code, out, err = assay(
        "register", "churn", str(source), "--dataset", "customers@1", "--no-watermark", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert (result["uri"], result["reused"], result["datasets"]) == (
        "models:/churn/1",
        False,
        ["customers@1"],
    )
    code, out, _ = assay("register", "churn", str(source), "--no-watermark")
    assert code == 0 and "already registered as models:/churn/1" in out

    code, out, _ = assay("verify", "models:/churn/1")
    assert code == 0 and "OK models:/churn/1: 2 files match" in out
    code, out, _ = assay("verify", "models:/churn/1", "--json")
    assert code == 0 and json.loads(out)["ok"] is True

    # production is protected: a plain-MLflow move onto a version not known-good is refused
    Registry.open(Settings.from_env()).backend.set_alias("churn", "production", "1")
    code, out, err = assay("verify", "models:/churn@production")
    assert code == 3 and "not known-good" in out + err
    assert assay("mark", "churn", "1", "known-good", "--reason", "evaluated")[0] == 0
    code, out, _ = assay("verify", "models:/churn@production")
    assert code == 0 and "OK models:/churn/1" in out


def test_sigterm_during_upload_ends_the_run_failed(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled CI job (SIGTERM) mid-upload: one error line, the run FAILED, a re-run works."""
    import signal

    from mlflow import MlflowClient

    source = make_model(tmp_path / "m", b"weights of a cancelled job")
    with monkeypatch.context() as mp:
        mp.setattr(
            MlflowClient, "log_artifacts", lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM)
        )
        code, _, err = assay("register", "cancelled", str(source), "--no-watermark")
    assert code == 1
    assert one_error_line(err) == (
        "error: registration of cancelled was terminated (SIGTERM); re-run it to finish"
    )
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
    backend = Registry.open(Settings.from_env()).backend
    runs = backend._client.search_runs(
        [backend._experiment()], filter_string="tags.`assay.model` = 'cancelled'"
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    code, out, err = assay("register", "cancelled", str(source), "--no-watermark")
    assert code == 0 and "registered models:/cancelled/1" in out, err


def test_bad_references_exit_1_with_one_line(home: Path, tmp_path: Path) -> None:
    make = make_model(tmp_path / "m", b"churn weights for errors")
    assay("register", "errs", str(make), "--no-watermark")
    for args, text in (
        (("verify", "models:/unknown-model/1"), "model 'unknown-model' has no version 1"),
        (("verify", "models:/errs/7"), "has no version 7"),
        (("verify", "models:/errs@production"), "has no alias 'production'"),
        (("verify", "dataset:unknown-data@1"), "no dataset named 'unknown-data'"),
        (("verify", "models:/errs"), "not a model version"),
        (("register", "bad name", str(make)), "invalid model name"),
        (("register", "errs", str(tmp_path / "nowhere")), "does not exist"),
    ):
        code, out, err = assay(*args)
        assert code == 1, (args, out, err)
        assert text in one_error_line(err), err


def test_missing_dataset_at_register_registers_nothing(home: Path, tmp_path: Path) -> None:
    source = make_model(tmp_path / "m", b"weights with missing lineage")
    size = audit_size()
    code, _, err = assay("register", "orphan", str(source), "--dataset", "ghost@1")
    assert code == 1
    assert "no dataset named 'ghost'" in one_error_line(err)
    code, _, err = assay("register", "orphan", str(source), "--dataset", "customers@42")
    assert code == 1 and "no version 42" in one_error_line(err)
    assert audit_size() == size
    backend = Registry.open(Settings.from_env()).backend
    assert "orphan" not in backend.list_models()


def test_tampered_and_deleted_artifacts_exit_3(home: Path, tmp_path: Path) -> None:
    for name in ("flipped", "deleted"):
        code, _, err = assay(
            "register",
            name,
            str(make_model(tmp_path / name, name.encode() * 100)),
            "--no-watermark",
        )
        assert code == 0, err
    weights = store_folder("flipped", "1") / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[10] ^= 0xFF
    weights.write_bytes(bytes(data))
    code, out, err = assay("verify", "models:/flipped/1")
    assert code == 3
    assert "FAILED models:/flipped/1" in out and "modified  weights.bin" in out
    assert "1 modified (weights.bin)" in one_error_line(err)

    shutil.rmtree(store_folder("deleted", "1"))
    code, _, err = assay("verify", "models:/deleted/1")
    assert code == 3 and "gone from the artifact store" in one_error_line(err)


@pytest.mark.slow
def test_four_concurrent_registers_on_sqlite(home: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["ASSAY_HOME"] = str(home)
    sources = [make_model(tmp_path / f"c{i}", os.urandom(2048)) for i in range(4)]
    procs = [
        subprocess.Popen(
            [ASSAY, "register", "concurrent", str(src), "--no-watermark", "--json"],
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
    assert len({r["manifest_root"] for r in results}) == 4
    for r in results:
        code, out, _ = assay("verify", r["uri"])
        assert code == 0, out
    audit = subprocess.run(
        [ASSAY, "audit", "verify"], capture_output=True, text=True, env=env, timeout=120
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr

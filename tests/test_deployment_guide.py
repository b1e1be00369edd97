"""README's deployment guide, followed step by step on 127.0.0.1.

One shared store (PostgreSQL when ``ASSAY_TEST_PG_URL`` is set, as in CI; else one SQLite file
that every home points at), the admin's home, a guarded ``mlflow server --app-name assay-guard``,
a CI key made with openssl and trusted by the admin with the ``signer`` role only, a CI job in a
throw-away home that joins without adding keys and registers, a reviewer key (``approver``) that
marks and promotes, and a serving process that loads through the decision. Then what an attacker
with plain MLflow access tries: moving ``production`` onto an unapproved version (refused by the
server, 403) and loading it through a plain MLflow alias move behind the guard's back (refused by
the plugin). S3 is not exercised (no object store here): the guide's S3 variables are MLflow's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow_server as server_helper
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.server]

ASSAY = str(Path(sys.executable).with_name("assay"))
PG_URL = os.environ.get("ASSAY_TEST_PG_URL")
CLEARED = (
    "ASSAY_HOME",
    "ASSAY_DB_URL",
    "ASSAY_KEY",
    "ASSAY_KEY_PASSPHRASE",
    "ASSAY_TRUST_ROOT",
    "ASSAY_ENFORCE",
    "MLFLOW_TRACKING_URI",
)

LOAD = """
import sys, mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
print("loaded", type(model).__name__)
"""


@contextlib.contextmanager
def shared_store(tmp_path: Path) -> Iterator[str]:
    """The shared store's URL: a fresh PostgreSQL database next to ASSAY_TEST_PG_URL's, or SQLite."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'shared-assay.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(PG_URL)
    name = f"assay_guide_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(ASSAY_ACTOR="guide@assay", HF_HUB_OFFLINE="1", **extra)
    return env


def _run(cmd: list[str], env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if ok:
        assert proc.returncode == 0, f"{cmd}: {proc.stderr[-3000:]}"
    return proc


def _openssl_key(folder: Path, name: str) -> tuple[Path, Path]:
    pem, pub = folder / f"{name}.pem", folder / f"{name}.pub"
    _run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            str(pem),
        ],
        dict(os.environ),
    )
    _run(["openssl", "pkey", "-in", str(pem), "-pubout", "-out", str(pub)], dict(os.environ))
    return pem, pub


def _sklearn_model(folder: Path, max_iter: int) -> Path:
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    mlflow.sklearn.save_model(LogisticRegression(max_iter=max_iter).fit(x, y), str(folder))
    return folder


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the guide uses openssl")
def test_the_deployment_guide_works_verbatim(tmp_path: Path) -> None:
    with shared_store(tmp_path) as db_url:
        # 1. the admin, once
        admin = _env(ASSAY_HOME=str(tmp_path / "admin-home"), ASSAY_DB_URL=db_url)
        server_root = tmp_path / "mlflow"
        server = server_helper.MlflowServer(server_root, app_name="assay-guard")
        init = _run([ASSAY, "init", "--json"], admin)
        root = json.loads(init.stdout)["trust_root"]
        assert len(root) == 64

        # 2. the MLflow server with the guard
        server.env.update(
            ASSAY_DB_URL=db_url,
            ASSAY_TRUST_ROOT=root,
            ASSAY_HOME=str(tmp_path / "server-home"),
            ASSAY_KEY="",
        )
        with server:
            # 3. a key per CI pipeline, trusted by the admin (signer only); a reviewer key
            ci_pem, ci_pub = _openssl_key(tmp_path, "ci")
            rv_pem, rv_pub = _openssl_key(tmp_path, "reviewer")
            _run(
                [ASSAY, "key", "trust", str(ci_pub), "--name", "ci-churn", "--role", "signer"],
                admin,
            )
            _run(
                [ASSAY, "key", "trust", str(rv_pub), "--name", "alice", "--role", "approver"],
                admin,
            )
            _run([ASSAY, "key", "grant", "alice", "--role", "responder"], admin)

            # 4. each CI job joins the store without adding any key, and registers
            job = _env(
                ASSAY_HOME=str(tmp_path / "ci-job-home"),
                ASSAY_DB_URL=db_url,
                ASSAY_TRUST_ROOT=root,
                ASSAY_KEY=ci_pem.read_text(),
                MLFLOW_TRACKING_URI=server.url,
            )
            keys_before = json.loads(_run([ASSAY, "key", "list", "--json"], admin).stdout)
            _run([ASSAY, "init"], job)
            keys_after = json.loads(_run([ASSAY, "key", "list", "--json"], admin).stdout)
            assert keys_after == keys_before
            model1 = _sklearn_model(tmp_path / "model-v1", 300)
            model2 = _sklearn_model(tmp_path / "model-v2", 50)
            _run([ASSAY, "register", "churn", str(model1), "--alias", "staging"], job)
            _run([ASSAY, "register", "churn", str(model2), "--alias", "staging"], job)
            # the CI key cannot approve its own model
            own = _run([ASSAY, "mark", "churn", "1", "known-good", "--reason", "me"], job, ok=False)
            assert own.returncode == 1 and "lacks the 'approver' role" in own.stderr

            # 5. a reviewer marks and promotes; a serving host loads through the decision
            reviewer = dict(job, ASSAY_HOME=str(tmp_path / "reviewer-home"))
            reviewer["ASSAY_KEY"] = rv_pem.read_text()
            _run([ASSAY, "init"], reviewer)
            _run(
                [ASSAY, "mark", "churn", "1", "known-good", "--reason", "passed evaluation"],
                reviewer,
            )
            _run([ASSAY, "promote", "churn", "1", "--alias", "production"], reviewer)
            serving = _env(
                ASSAY_HOME=str(tmp_path / "serving-home"),
                ASSAY_DB_URL=db_url,
                ASSAY_TRUST_ROOT=root,
                MLFLOW_TRACKING_URI=server.url,
            )
            loaded = _run([sys.executable, "-c", LOAD, "models:/churn@production"], serving)
            assert "loaded PyFuncModel" in loaded.stdout

            # an attacker with plain MLflow access: the server refuses the move (403) ...
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException

            client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
            with pytest.raises(MlflowException, match="assay guard"):
                client.set_registered_model_alias("churn", "production", "2")
            assert client.get_registered_model("churn").aliases["production"] == "1"

            # ... and behind the server's back (its database), the serving process refuses
            import sqlite3

            with sqlite3.connect(server.db_path) as conn:
                conn.execute(
                    "UPDATE registered_model_aliases SET version = 2 WHERE name = 'churn' AND"
                    " alias = 'production'"
                )
            conn.close()
            assert client.get_registered_model("churn").aliases["production"] == "2"
            refused = _run(
                [sys.executable, "-c", LOAD, "models:/churn@production"], serving, ok=False
            )
            assert refused.returncode != 0
            assert "not known-good" in refused.stderr

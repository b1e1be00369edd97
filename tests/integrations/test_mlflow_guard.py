"""``mlflow server --app-name assay-guard`` for real, on 127.0.0.1.

A plain ``MlflowClient`` (what anyone with MLflow write access has) tries each refused call and
gets an ``MlflowException`` with PERMISSION_DENIED and the guard's one-line reason; assay's own
``promote`` and ``rollback`` (the CLI, ``MLFLOW_TRACKING_URI`` = the guarded server) pass through
it, with assay's store on SQLite and on PostgreSQL. Two more guarded servers whose store cannot
be read (an empty ``ASSAY_HOME``, a PostgreSQL port nobody listens on) refuse every guarded call.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow_server as server_helper
import pytest
import registry_fixtures as fx
from sqlalchemy import select

pytestmark = [pytest.mark.slow, pytest.mark.server]

ASSAY = str(Path(sys.executable).with_name("assay"))
PG_URL = os.environ.get("ASSAY_TEST_PG_URL")
#: assay's store behind the guard: SQLite, and PostgreSQL when ``ASSAY_TEST_PG_URL`` is set.
STORE_BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="ASSAY_TEST_PG_URL is not set"),
        ],
    ),
]
#: Blanked in the guarded server's environment, so only what a test gives it counts.
SERVER_CLEARED = {"ASSAY_DB_URL": "", "ASSAY_KEY": "", "ASSAY_KEY_PASSPHRASE": ""}


@dataclass
class Guarded:
    server: server_helper.MlflowServer
    registry: Any
    env: dict[str, str]
    root: Path

    @property
    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.server.url, registry_uri=self.server.url)

    def assay(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ASSAY, *args], capture_output=True, text=True, env=self.env, timeout=300
        )

    def aliases(self, name: str) -> dict[str, str]:
        return {a: str(v) for a, v in self.client.get_registered_model(name).aliases.items()}


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A database of its own next to ``ASSAY_TEST_PG_URL``'s, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    assert PG_URL
    base = make_url(PG_URL)
    name = f"assay_guard_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def guarded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guarded]:
    """A guarded server over an assay store (SQLite in ASSAY_HOME, or PostgreSQL) initialised
    through it; the environment points at both."""
    from assay.core.settings import Settings
    from assay.registry.facade import Registry

    root = tmp_path_factory.mktemp("guard")
    home = root / "home"
    env = {"ASSAY_HOME": str(home), "ASSAY_ACTOR": "test@assay", "HF_HUB_OFFLINE": "1"}
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            env["ASSAY_DB_URL"] = stack.enter_context(fresh_postgres())
        server_env = {**SERVER_CLEARED, **env}
        srv = stack.enter_context(
            server_helper.MlflowServer(root / "server", app_name="assay-guard", env=server_env)
        )
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        for var in fx.CLEARED:
            mp.delenv(var, raising=False)
        env["MLFLOW_TRACKING_URI"] = srv.url
        for key, value in env.items():
            mp.setenv(key, value)
        Registry.initialise(Settings.from_env())
        full = {k: v for k, v in os.environ.items() if k not in fx.CLEARED} | env
        yield Guarded(srv, Registry.open(Settings.from_env()), full, root)


def registered(g: Guarded, name: str, state: str | None = None) -> str:
    """Register a version through the guarded server (optionally marked); its number."""
    from assay.registry.states import mark

    version = fx.model(g.registry, name, g.root)
    if state is not None:
        mark(g.registry, name, version, state, reason=f"test: {state}")
    return version


def refused(call: Any, *args: Any) -> str:
    """Run a client call that the guard must refuse; its message."""
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as info:
        call(*args)
    assert info.value.error_code == "PERMISSION_DENIED", info.value
    message = str(info.value)
    assert message.startswith("PERMISSION_DENIED: assay guard: ") and "\n" not in message
    return message.removeprefix("PERMISSION_DENIED: ")


def raw(
    g: Guarded, method: str, path: str, body: dict[str, Any] | str
) -> tuple[int, dict[str, Any]]:
    """One REST call with urllib (``body`` encoded as JSON): (HTTP status, JSON answer)."""
    req = urllib.request.Request(
        g.server.url + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        assert text.count(b"\n") <= 1, text
        return exc.code, json.loads(text)


def weights(g: Guarded, name: str, version: str) -> Path:
    """The version's weights file in the server's artifact store."""
    source = g.registry.backend.get_version(name, version).source
    return (
        g.server.artifacts_path
        / source.removeprefix("mlflow-artifacts:").lstrip("/")
        / "weights.bin"
    )


def tamper(g: Guarded, name: str, version: str) -> None:
    """Flip one byte of the version's weights in the server's artifact store."""
    path = weights(g, name, version)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))


# --- protected aliases -------------------------------------------------------------------------


def test_production_moves_only_to_a_version_that_passes_the_decision(guarded: Guarded) -> None:
    g, name = guarded, fx.unique("guard-set")
    plain = registered(g, name)
    compromised = registered(g, name, "compromised")
    tampered = registered(g, name, "known-good")
    gone = registered(g, name, "known-good")
    good = registered(g, name, "known-good")
    tamper(g, name, tampered)
    weights(g, name, gone).unlink()
    client = g.client

    for version in (plain, compromised, tampered, gone):
        message = refused(client.set_registered_model_alias, name, "production", version)
        assert message.startswith(
            f"assay guard: refusing to point {name}@production at version {version}: "
        ), message
    assert g.aliases(name) == {}

    client.set_registered_model_alias(name, "production", good)  # a plain client, a good target
    client.set_registered_model_alias(name, "staging", compromised)  # staging is not protected
    assert g.aliases(name) == {"production": good, "staging": compromised}

    # MLflow's error shape, one line, on the REST path and on the UI's /ajax-api/ twin.
    for prefix in ("/api/2.0", "/ajax-api/2.0"):
        status, body = raw(
            g,
            "POST",
            f"{prefix}/mlflow/registered-models/alias",
            {"name": name, "alias": "production", "version": compromised},
        )
        assert status == 403
        assert body["error_code"] == "PERMISSION_DENIED"
        assert body["assay_code"] == "compromised"
        assert body["message"].startswith(f"assay guard: refusing to point {name}@production")
    assert g.aliases(name)["production"] == good


def test_protected_alias_is_not_deleted(guarded: Guarded) -> None:
    g, name = guarded, fx.unique("guard-del-alias")
    version = registered(g, name, "known-good")
    g.client.set_registered_model_alias(name, "production", version)
    g.client.set_registered_model_alias(name, "staging", version)
    message = refused(g.client.delete_registered_model_alias, name, "production")
    assert message == (
        f"assay guard: {name}@production is a protected alias and is never deleted; move it "
        "with `assay promote` or `assay rollback`"
    )
    g.client.delete_registered_model_alias(name, "staging")
    assert g.aliases(name) == {"production": version}


def test_stage_transition_into_production_is_decided_like_the_alias(guarded: Guarded) -> None:
    g, name = guarded, fx.unique("guard-stage")
    plain = registered(g, name)
    good = registered(g, name, "known-good")
    message = refused(g.client.transition_model_version_stage, name, plain, "Production")
    assert f"refusing to move models:/{name}/{plain} to stage Production" in message
    g.client.transition_model_version_stage(name, good, "Production")
    message = refused(g.client.transition_model_version_stage, name, good, "Archived")
    assert "it serves in the protected stage Production" in message


# --- assay's own promote and rollback, through the guard; freezes ------------------------------


def test_assay_promote_and_rollback_pass_and_a_freeze_holds(guarded: Guarded) -> None:
    from assay.registry.states import freeze

    g, name = guarded, fx.unique("guard-rb")
    first = registered(g, name, "known-good")
    second = registered(g, name, "known-good")
    unvetted = registered(g, name)
    for version in (first, second):
        proc = g.assay("promote", name, version, "--alias", "production")
        assert proc.returncode == 0, proc.stderr
    assert g.aliases(name) == {"production": second}
    g.client.set_registered_model_alias(name, "staging", second)

    # A forced promotion is assay's own caller, but the guard checks the target: refused.
    forced = g.assay(
        "promote", name, unvetted, "--alias", "production", "--force", "--reason", "hotfix"
    )
    assert forced.returncode == 1, forced.stderr
    assert forced.stderr.startswith("error: MLflow refused ") and "assay guard:" in forced.stderr
    assert g.aliases(name)["production"] == second

    freeze(g.registry, name, reason="INC-7 bad predictions")
    for call, args in (
        (g.client.set_registered_model_alias, (name, "staging", first)),
        (g.client.delete_registered_model_alias, (name, "staging")),
        (g.client.set_registered_model_alias, (name, "production", first)),
    ):
        message = refused(call, *args)
        assert f"model {name} is frozen (INC-7 bad predictions)" in message

    proc = g.assay("rollback", name, "--reason", "bad predictions", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["from_version"], result["to_version"], result["moved"]) == (second, first, True)
    assert g.aliases(name) == {"production": first, "staging": second}

    # Once the rollback is done the freeze holds again, and the replaced version is quarantined.
    message = refused(g.client.set_registered_model_alias, name, "production", second)
    assert "is frozen" in message
    audit = g.assay("audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr


# --- deletions and renames ---------------------------------------------------------------------


def test_known_good_and_serving_versions_and_their_models_are_not_deleted(
    guarded: Guarded,
) -> None:
    g, name = guarded, fx.unique("guard-delete")
    good = registered(g, name, "known-good")
    serving = registered(g, name)
    spare = registered(g, name)
    g.client.set_registered_model_alias(name, "staging", serving)
    client = g.client

    assert refused(client.delete_model_version, name, good) == (
        f"assay guard: refusing to delete models:/{name}/{good}: it is known-good"
    )
    assert "it serves behind alias staging" in refused(client.delete_model_version, name, serving)
    # The version as MLflow reads it ("01" is version 1), not as text.
    status, body = raw(
        g, "DELETE", "/api/2.0/mlflow/model-versions/delete", {"name": name, "version": f"0{good}"}
    )
    assert (status, body["assay_code"]) == (403, "known-good")
    client.delete_model_version(name, spare)  # neither known-good nor serving

    # A state row edited in the database does not make a known-good version deletable: its
    # newest signed state statement still says known-good.
    edited = registered(g, name, "known-good")
    with g.registry.store.session() as session:
        from assay.store.models import Artifact, ArtifactState

        artifact = session.scalars(
            select(Artifact).where(Artifact.name == name, Artifact.version == edited)
        ).one()
        session.get(ArtifactState, artifact.id).state = "registered"
    assert refused(client.delete_model_version, name, edited) == (
        f"assay guard: refusing to delete models:/{name}/{edited}: it is known-good"
    )

    assert "it has aliases (staging" in refused(client.delete_registered_model, name)
    client.delete_registered_model_alias(name, "staging")
    assert f"versions {good}, {edited} are known-good" in refused(
        client.delete_registered_model, name
    )
    assert {mv.version for mv in client.search_model_versions(f"name='{name}'")} == {
        good,
        serving,
        edited,
    }


def test_managed_models_are_not_renamed_and_plain_ones_are(guarded: Guarded) -> None:
    g, name = guarded, fx.unique("guard-rename")
    registered(g, name)
    plain = fx.unique("plain-mlflow")
    client = g.client
    client.create_registered_model(plain)

    assert f"assay manages '{name}'" in refused(client.rename_registered_model, name, "other")
    assert f"assay manages '{name}'" in refused(client.rename_registered_model, plain, name)
    client.rename_registered_model(plain, plain + "-renamed")
    client.delete_registered_model(plain + "-renamed")
    assert client.get_registered_model(name).name == name


# --- fail closed -------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["empty-home", "dead-postgres"])
def test_a_guard_whose_store_cannot_be_read_refuses(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    env = {**SERVER_CLEARED, "ASSAY_HOME": str(tmp_path / "never-initialised")}
    if store == "dead-postgres":
        port = server_helper.free_port()  # nobody listens there
        env["ASSAY_DB_URL"] = f"postgresql+psycopg://assay@127.0.0.1:{port}/assay"
    with server_helper.MlflowServer(tmp_path / "server", app_name="assay-guard", env=env) as srv:
        client = MlflowClient(tracking_uri=srv.url, registry_uri=srv.url)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.url)
        client.create_registered_model("m")  # unguarded calls are MLflow's as usual
        run = client.create_run(client.create_experiment("e"))
        source = f"{run.info.artifact_uri}/model"
        version = client.create_model_version("m", source, run_id=run.info.run_id).version
        for call, args in (
            (client.set_registered_model_alias, ("m", "production", version)),
            (client.set_registered_model_alias, ("m", "staging", version)),
            (client.delete_model_version, ("m", version)),
            (client.delete_registered_model, ("m",)),
            (client.rename_registered_model, ("m", "n")),
        ):
            message = refused(call, *args)
            assert "assay's store" in message and message.endswith("refusing (fail closed)")
        assert client.get_registered_model("m").aliases == {}
        assert "refused POST /api/2.0/mlflow/registered-models/alias" in srv.log_tail(20000)


def test_the_guard_reads_a_request_as_mlflow_does(guarded: Guarded) -> None:
    g, name = guarded, fx.unique("guard-parse")
    plain = registered(g, name)
    alias_path = "/api/2.0/mlflow/registered-models/alias"

    # A body older clients double-encode (a JSON string holding the JSON): MLflow decodes it
    # twice, and so does the guard.
    doc = json.dumps({"name": name, "alias": "production", "version": plain})
    status, body = raw(g, "POST", alias_path, doc)
    assert (status, body["error_code"], body["assay_code"]) == (
        403,
        "PERMISSION_DENIED",
        "not-known-good",
    )

    # What MLflow itself refuses stays MLflow's own answer.
    status, body = raw(g, "POST", alias_path, {"name": name, "alias": "production"})
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert "assay_code" not in body
    status, body = raw(g, "POST", alias_path, {"name": name, "alias": "production", "version": "x"})
    assert (status, body["assay_code"]) == (403, "invalid")
    assert g.aliases(name) == {}

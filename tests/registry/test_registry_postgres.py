"""assay's store on PostgreSQL (``ASSAY_DB_URL``): register, verify, faults and four concurrent
``assay register`` processes. MLflow itself stays on its embedded sqlite database.

Skipped unless ``ASSAY_TEST_PG_URL`` names a PostgreSQL database whose user may create databases:
the module works in a fresh database of its own and drops it at the end, so it neither sees nor
leaves anything behind.
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
from store_backends import PG_URL, drop_database, fresh_database

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(not PG_URL, reason="ASSAY_TEST_PG_URL is not set"),
]

ASSAY = str(Path(sys.executable).with_name("assay"))
CLEARED = (
    "ASSAY_DB_URL",
    "MLFLOW_TRACKING_URI",
    "ASSAY_KEY",
    "ASSAY_KEY_PASSPHRASE",
    "ASSAY_ENFORCE",
)


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    """A fresh database next to ``ASSAY_TEST_PG_URL``'s, dropped afterwards."""
    url = fresh_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="module")
def env(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("pg") / "home"
    full = {k: v for k, v in os.environ.items() if k not in CLEARED}
    full.update(ASSAY_HOME=str(home), ASSAY_ACTOR="test@assay", ASSAY_DB_URL=db_url)
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        for key in ("ASSAY_HOME", "ASSAY_ACTOR", "ASSAY_DB_URL"):
            mp.setenv(key, full[key])
        init = subprocess.run([ASSAY, "init"], capture_output=True, text=True, env=full)
        assert init.returncode == 0, init.stderr
        assert "postgresql" in init.stdout
        assert not (home / "assay.db").exists()
        yield full


@pytest.fixture(scope="module")
def registry(env: dict[str, str]):
    from assay.core.settings import Settings
    from assay.registry.facade import Registry

    registry = Registry.open(Settings.from_env())
    assert registry.settings.db_url.startswith("postgresql")
    yield registry
    registry.store.dispose()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ASSAY, *args], capture_output=True, text=True, env=env, timeout=300)


def make_model(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(content)
    return folder


def test_register_verify_and_tamper(env: dict[str, str], registry, tmp_path: Path) -> None:
    from assay.mlflow_access.artifacts import local_path_of

    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.csv").write_text("a\n1\n")
    assert run(env, "dataset", "register", "pg-data", str(data)).returncode == 0
    reg = run(
        env,
        "register",
        "pg-model",
        str(make_model(tmp_path / "m", b"pg weights" * 100)),
        "--dataset",
        "pg-data@1",
        "--no-watermark",
        "--json",
    )
    assert reg.returncode == 0, reg.stderr
    result = json.loads(reg.stdout)
    assert result["datasets"] == ["pg-data@1"]
    ok = run(env, "verify", "models:/pg-model/1")
    assert ok.returncode == 0 and "OK models:/pg-model/1" in ok.stdout, ok.stderr
    assert run(env, "verify", "dataset:pg-data@1").returncode == 0

    size = registry.audit.tree_size()
    bad = run(env, "register", "pg-orphan", str(tmp_path / "m"), "--dataset", "ghost@1")
    assert bad.returncode == 1 and "no dataset named 'ghost'" in bad.stderr
    assert registry.audit.tree_size() == size
    assert "pg-orphan" not in registry.backend.list_models()

    weights = local_path_of(result["source"]) / "weights.bin"
    raw = bytearray(weights.read_bytes())
    raw[3] ^= 0x10
    weights.write_bytes(bytes(raw))
    failed = run(env, "verify", "models:/pg-model/1")
    assert failed.returncode == 3 and "modified  weights.bin" in failed.stdout
    shutil.rmtree(weights.parent)
    assert run(env, "verify", "models:/pg-model/1").returncode == 3


def test_replayed_bundle_fails_on_the_binding(registry, tmp_path: Path) -> None:
    from sqlalchemy import text

    from assay.registry.registration import register_model
    from assay.registry.uri_verify import verify_uri

    v1 = register_model(
        registry, "pg-replay", str(make_model(tmp_path / "a", b"one")), watermark=False
    )
    v2 = register_model(
        registry, "pg-replay", str(make_model(tmp_path / "b", b"two")), watermark=False
    )
    assert (v1.version, v2.version) == ("1", "2")
    with registry.store.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE signatures SET bundle = (SELECT bundle FROM signatures WHERE subject = :s1)"
                " WHERE subject = :s2"
            ),
            {"s1": "models:/pg-replay/1", "s2": "models:/pg-replay/2"},
        )
    from assay.mlflow_access.artifacts import local_path_of

    folder2 = local_path_of(v2.source or "")
    shutil.rmtree(folder2)
    shutil.copytree(local_path_of(v1.source or ""), folder2)
    report = verify_uri(registry, "models:/pg-replay/2")
    assert not report.ok and not report.modified
    assert any("binding" in p for p in report.problems), report.problems


def test_interrupted_registration_is_adopted(
    registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.registry import registration

    source = make_model(tmp_path / "m", b"pg interrupted")
    with monkeypatch.context() as mp:
        mp.setattr(registration, "_record", lambda *a, **k: (_ for _ in ()).throw(OSError("cut")))
        with pytest.raises(OSError):
            registration.register_model(registry, "pg-crash", str(source), watermark=False)
    done = registration.register_model(registry, "pg-crash", str(source), watermark=False)
    assert (done.version, done.reused) == ("1", False)
    again = registration.register_model(registry, "pg-crash", str(source), watermark=False)
    assert (again.version, again.reused) == ("1", True)
    assert len(registry.backend.list_versions("pg-crash")) == 1


def test_four_concurrent_registers(env: dict[str, str], tmp_path: Path) -> None:
    sources = [make_model(tmp_path / f"c{i}", os.urandom(2048)) for i in range(4)]
    procs = [
        subprocess.Popen(
            [ASSAY, "register", "pg-conc", str(src), "--no-watermark", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for src in sources
    ]
    versions = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        versions.append(int(json.loads(out)["version"]))
    assert sorted(versions) == [1, 2, 3, 4]
    for v in versions:
        assert run(env, "verify", f"models:/pg-conc/{v}").returncode == 0
    audit = run(env, "audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr

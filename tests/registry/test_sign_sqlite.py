"""``sign_path_sqlite`` (stdlib sqlite3) writes what ``sign_path`` (the ORM) writes, by its rules.

Both paths sign folders in one SQLite store, each creating an artifact and re-signing the
other's; the ORM then reads every row back: same columns, timestamps in the same stored format
(aware UTC on the way out), audit leaves that verify, bundles that verify.
"""

from __future__ import annotations

import os
import re
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from assay.core.errors import AssayError, ConfigError, RefusedError
from assay.core.settings import Settings
from assay.registry.sign_sqlite import db_time, sign_path_sqlite
from assay.store.sqlite_readonly import sqlite_path

STORED_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


@pytest.fixture
def registry(assay_home: Path, monkeypatch: pytest.MonkeyPatch):
    """An initialised store (MLflow's schema is not needed here)."""
    from assay.registry.facade import Registry

    monkeypatch.setattr(Registry, "_initialise_mlflow", lambda self: None)
    Registry.initialise(Settings.from_env())
    reg = Registry.open(Settings.from_env())
    yield reg
    reg.store.dispose()


def _model(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    (path / "w.bin").write_bytes(os.urandom(5000))
    (path / "cfg.json").write_text("{}")
    return path


def _orm(registry, path: Path, **kw):
    return registry.sign_path(path, **kw)


def _sqlite(registry, path: Path, **kw):
    settings = registry.settings
    return sign_path_sqlite(settings, sqlite_path(settings.db_url), path, **kw)


SIGNERS = {"orm": _orm, "sqlite": _sqlite}


def _raw(registry, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(str(sqlite_path(registry.settings.db_url)))
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_db_time_is_sqlalchemys_sqlite_format():
    moment = datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=timezone(timedelta(hours=2)))
    assert db_time(moment) == "2026-01-02 01:04:05.000060"


def test_both_paths_write_the_same_rows(registry, tmp_path: Path):
    from sqlalchemy import select

    from assay.store.models import Artifact, AuditEvent, Signature
    from assay.trust.verification import verify_path

    a, b = _model(tmp_path, "a"), _model(tmp_path, "b")
    start = datetime.now(timezone.utc)
    results = [
        _orm(registry, a),  # ORM creates a's artifact
        _sqlite(registry, b, hash_type="blake3"),  # sqlite3 creates b's
        _sqlite(registry, a, shard_size=1000),  # sqlite3 re-signs a (artifact updated)
        _orm(registry, b),  # ORM re-signs b
    ]
    end = datetime.now(timezone.utc)
    assert [r.serialization for r in results] == [
        "sha256",
        "blake3",
        "sha256/shards:1000",
        "sha256",
    ]

    with registry.store.session(readonly=True) as s:
        arts = {x.name: x for x in s.scalars(select(Artifact).where(Artifact.kind == "path"))}
        sigs = list(s.scalars(select(Signature).where(Signature.subject.in_(list(arts)))))
        events = [e for e in s.scalars(select(AuditEvent)) if e.action == "sign"]
    assert sorted(arts) == sorted(str(p.resolve()) for p in (a, b))
    for art in arts.values():
        assert (art.version, art.uri) == (None, art.name)
        assert start <= art.created_at <= end
    assert arts[str(a.resolve())].manifest_root == results[2].root_digest
    assert arts[str(b.resolve())].manifest_root == results[3].root_digest
    assert [(g.subject, g.manifest_root, g.key_id) for g in sigs] == [
        (str(p.resolve()), r.root_digest, r.key_id)
        for p, r in zip((a, b, a, b), results, strict=True)
    ]
    for g in sigs:
        assert g.artifact_id == arts[g.subject].id
        assert start <= g.recorded_at <= end
    assert [(e.subject, e.payload_dict["root_digest"]) for e in events] == [
        (f"path:{p.resolve()}", r.root_digest) for p, r in zip((a, b, a, b), results, strict=True)
    ]
    assert len({e.actor for e in events}) == 1
    assert [sorted(e.payload_dict) for e in events[1:]] == [sorted(events[0].payload_dict)] * 3
    assert [e.payload_dict["serialization"] for e in events] == [r.serialization for r in results]
    assert all(start <= e.ts <= end for e in events)
    # the ORM recomputes every leaf from the rows (sqlite3 ones included): the log verifies
    assert registry.audit_verify().ok

    # stored text: one timestamp format whichever path wrote it
    for table, col in (("artifacts", "created_at"), ("signatures", "recorded_at")):
        assert all(STORED_TIME.match(v) for (v,) in _raw(registry, f"SELECT {col} FROM {table}"))
    assert all(STORED_TIME.match(v) for (v,) in _raw(registry, "SELECT ts FROM audit_events"))
    # the latest bundles verify, with their recorded times found
    for path in (a, b):
        report = verify_path(registry.keys, registry.settings, path)
        assert report.ok, report.problems


@pytest.mark.parametrize("how", SIGNERS)
def test_untrusted_key_is_refused_and_nothing_recorded(registry, tmp_path: Path, how, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = tmp_path / "stranger.pem"
    pem.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    model = _model(tmp_path, "m")
    before = _raw(registry, "SELECT count(*) FROM audit_events")
    with pytest.raises(RefusedError, match="is not trusted by this store"):
        SIGNERS[how](registry, model, key=str(pem))
    assert _raw(registry, "SELECT count(*) FROM audit_events") == before
    assert not (model / "model.sig").exists()


@pytest.mark.parametrize("how", SIGNERS)
def test_revoked_key_is_refused(registry, tmp_path: Path, how):
    key_id = registry.keys.signing_key()[0].key_id
    registry.keys.revoke(key_id, reason="rotated")
    with pytest.raises(RefusedError, match="refusing to sign"):
        SIGNERS[how](registry, _model(tmp_path, "m"))


@pytest.mark.parametrize("how", SIGNERS)
def test_unwritable_destination_records_nothing(registry, tmp_path: Path, how):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = _raw(registry, "SELECT count(*) FROM signatures")
    with pytest.raises(AssayError, match="cannot write"):
        SIGNERS[how](registry, _model(tmp_path, "m"), signature=blocker / "model.sig")
    assert _raw(registry, "SELECT count(*) FROM signatures") == before


def test_failed_transaction_rolls_back(registry, tmp_path: Path):
    """A store error mid-transaction (no audit head) leaves no artifact, signature or file."""
    db = sqlite_path(registry.settings.db_url)
    conn = sqlite3.connect(str(db))
    with conn:
        conn.execute("DELETE FROM audit_head")
    conn.close()
    model = _model(tmp_path, "m")
    with pytest.raises(ConfigError, match="no head row"):
        _sqlite(registry, model)
    assert _raw(registry, "SELECT count(*) FROM artifacts WHERE kind = 'path'") == [(0,)]
    assert not (model / "model.sig").exists()


def test_store_at_another_revision_is_refused(registry, tmp_path: Path):
    db = sqlite_path(registry.settings.db_url)
    conn = sqlite3.connect(str(db))
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    conn.close()
    with pytest.raises(ConfigError, match="schema revision 0001"):
        _sqlite(registry, _model(tmp_path, "m"))


def test_cli_sign_on_sqlite_never_imports_sqlalchemy(registry, tmp_path: Path):
    import subprocess
    import sys

    model = _model(tmp_path, "m")
    code = (
        "import sys\n"
        "from assay.cli import main\n"
        "try:\n"
        "    sys.argv = ['assay', 'sign', sys.argv[1], '--reuse-digests']\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'mlflow'))\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert (model / "model.sig").is_file()
    assert _raw(registry, "SELECT count(*) FROM signatures WHERE subject = ?", str(model.resolve()))

"""The store: engine setup, sessions, migrations, schema checks, timestamps."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from assay.core.errors import AssayError, ConfigError
from assay.core.settings import Settings
from assay.store.models import Artifact, Base, Key, Signature
from assay.store.store import HEAD_REVISION, MIGRATIONS_DIR, Store

TABLES = [
    "watermark_sketches",
    "serve_marks",
    "serve_alerts",
    "serve_queries",
    "serve_clients",
    "incident_steps",
    "incidents",
    "watermarks",
    "freezes",
    "lineage",
    "alias_moves",
    "state_changes",
    "artifact_states",
    "checkpoints",
    "audit_head",
    "audit_events",
    "signatures",
    "artifacts",
    "keys",
]


def _key(key_id: str = "a" * 64) -> Key:
    return Key(key_id=key_id, name="ci", key_type="ecdsa-p256", public_pem="PEM", has_private=True)


def test_open_uninitialised_raises_and_creates_nothing(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"not initialised in .*: run `assay init`"):
        Store.open(settings)
    if settings.db_url.startswith("sqlite"):
        assert not (settings.home / "assay.db").exists()
        assert not settings.home.exists()


def test_open_create_then_reopen(settings: Settings) -> None:
    store = Store.open(settings, create=True)
    assert store.revision() == HEAD_REVISION
    store.dispose()
    again = Store.open(settings)
    assert again.revision() == HEAD_REVISION
    # create=True on an up-to-date store is a no-op
    Store.open(settings, create=True).dispose()
    again.dispose()


def test_head_revision_constant_matches_migrations() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


def test_migrations_match_models(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    with store.engine.connect() as conn:
        names = set(store.engine.dialect.get_table_names(conn))
    assert names == {*TABLES, "alembic_version"}


def test_schema_revision_mismatch_is_reported(store: Store, settings: Settings) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(ConfigError, match="schema revision 9999"):
        Store.open(settings)


def test_missing_schema_in_existing_database(settings: Settings) -> None:
    if settings.db_url.startswith("sqlite"):
        settings.home.mkdir(parents=True)
        create_engine(settings.db_url).connect().close()  # an empty database file
    with pytest.raises(ConfigError, match="not initialised"):
        Store.open(settings)


def test_sqlite_pragmas(assay_home: Path) -> None:
    store = Store.open(Settings.from_env(), create=True)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    store.dispose()


def test_session_commits_and_rolls_back(store: Store) -> None:
    with store.session() as session:
        session.add(_key())
    with pytest.raises(RuntimeError), store.session() as session:
        session.add(_key("b" * 64))
        session.flush()
        raise RuntimeError("boom")
    with store.session(readonly=True) as session:
        assert session.scalars(select(Key.key_id)).all() == ["a" * 64]


def test_database_errors_are_wrapped(store: Store) -> None:
    with pytest.raises(AssayError, match="store error") as info, store.session() as session:
        session.add(
            Signature(subject="x", manifest_root="0" * 64, key_id="f" * 64, bundle="{}")
        )  # unknown key: foreign key violation
    assert info.value.__cause__ is not None


def test_artifact_uniqueness(store: Store) -> None:
    with store.session() as session:
        session.add(Artifact(kind="model", name="churn", version="1", uri="models:/churn/1"))
        session.add(Artifact(kind="model", name="churn", version="2"))
        session.add(Artifact(kind="path", name="/data/x"))
    for duplicate in (
        Artifact(kind="model", name="churn", version="1"),
        Artifact(kind="path", name="/data/x"),
    ):
        with pytest.raises(AssayError), store.session() as session:
            session.add(duplicate)


def test_timestamps_round_trip_as_aware_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=plus_two)
    with store.session() as session:
        key = _key()
        key.not_before = moment
        key.revoked_at = None
        session.add(key)
        session.add(Signature(subject="s", manifest_root="0" * 64, key_id=key.key_id, bundle="{}"))
    with store.session(readonly=True) as session:
        loaded = session.get(Key, "a" * 64)
        assert loaded is not None
        assert loaded.not_before == moment
        assert loaded.not_before.tzinfo == timezone.utc
        assert loaded.not_before.hour == 12
        assert loaded.created_at.tzinfo == timezone.utc
        assert loaded.revoked_at is None
        sig = session.scalars(select(Signature)).one()
        assert sig.recorded_at.tzinfo == timezone.utc
        assert abs(datetime.now(timezone.utc) - sig.recorded_at) < timedelta(minutes=1)
        # comparisons in SQL use the same UTC representation
        found = session.scalars(select(Key).where(Key.not_before < moment + timedelta(seconds=1)))
        assert [k.key_id for k in found] == ["a" * 64]
        found = session.scalars(select(Key).where(Key.not_before > moment))
        assert list(found) == []


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises((AssayError, ValueError)), store.session() as session:
        key = _key()
        key.not_before = datetime(2024, 1, 1)
        session.add(key)
        session.flush()


def test_bad_urls_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a database URL"):
        Store("not a url")
    with pytest.raises(ConfigError, match="cannot use database URL"):
        Store("nosuchdialect://x")
    unreachable = Store("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")
    with pytest.raises(ConfigError, match="cannot open") as info:
        unreachable.revision()
    assert "secret" not in str(info.value)


def test_import_is_cheap_and_alembic_stays_unloaded(assay_home: Path) -> None:
    Store.open(Settings.from_env(), create=True).dispose()
    code = (
        "import sys\n"
        "from assay.store.store import Store\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported at module import'\n"
        "from assay.core.settings import Settings\n"
        "Store.open(Settings.from_env()).dispose()\n"
        "assert 'alembic' not in sys.modules, 'alembic imported to open a store'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr

"""assay's store: a SQLAlchemy engine over SQLite (default) or PostgreSQL.

* SQLite: WAL journal, a 30 s busy timeout, foreign keys on, and every read-write transaction
  opened with ``BEGIN IMMEDIATE`` so that writers queue on the database lock instead of failing
  with "database is locked" when a read turns into a write.
* PostgreSQL: ``postgresql+psycopg://user@host/db`` URLs.
* The schema comes from the Alembic migrations shipped in ``assay.store.migrations``;
  :meth:`Store.upgrade` runs them. Opening a store only compares the ``alembic_version`` row with
  :data:`HEAD_REVISION`, so ordinary commands never load Alembic.

SQLAlchemy itself is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import AssayError, ConfigError, NotInitialisedError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from assay.core.settings import Settings

__all__ = ["HEAD_REVISION", "MIGRATIONS_DIR", "SQLITE_BUSY_TIMEOUT_S", "Store", "lock_store"]

log = logging.getLogger(__name__)

#: The newest migration's revision id; a store at any other revision must be upgraded.
HEAD_REVISION = "0006"
#: Folder of the Alembic environment (env.py, script.py.mako, versions/), inside the package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30

_READONLY = "assay_readonly"


def _describe(url: Any) -> str:
    """A URL for messages, password hidden."""
    return url.render_as_string(hide_password=True)


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig if orig is not None else exc).split())


class Store:
    """Engine, sessions and schema management for one store URL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        from sqlalchemy import create_engine, event
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError
        from sqlalchemy.orm import sessionmaker

        try:
            self.url = make_url(url)
        except ArgumentError as exc:
            raise ConfigError(f"not a database URL: {url!r}") from exc
        self.dialect = self.url.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
            if self.is_memory:
                from sqlalchemy.pool import StaticPool

                kwargs["poolclass"] = StaticPool
                kwargs["connect_args"]["check_same_thread"] = False
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except (ArgumentError, ImportError) as exc:
            raise ConfigError(f"cannot use database URL {_describe(self.url)}: {exc}") from exc
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Read-only sessions see one snapshot: SQLite's deferred transaction does that in WAL
        # mode; PostgreSQL needs REPEATABLE READ (its default READ COMMITTED re-reads per query).
        readonly_options: dict[str, Any] = {_READONLY: True}
        if self.dialect == "postgresql":
            readonly_options["isolation_level"] = "REPEATABLE READ"
        self._readonly_sessions = sessionmaker(
            self.engine.execution_options(**readonly_options), expire_on_commit=False
        )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings, *, create: bool = False) -> Store:
        """The store of ``settings``; with ``create``, make it and bring its schema to head.

        Without ``create`` a missing database or schema raises :class:`ConfigError`, and nothing
        is created on disk.
        """
        not_initialised = NotInitialisedError(
            f"assay is not initialised in {settings.home}: run `assay init`"
        )
        store = cls(settings.db_url)
        path = store.sqlite_path
        if path is not None and not path.exists():
            if not create:
                raise not_initialised
            path.parent.mkdir(parents=True, exist_ok=True)
        if create:
            settings.home.mkdir(parents=True, exist_ok=True)
            if store.revision() != HEAD_REVISION:
                store.upgrade()
            return store
        revision = store.revision()
        if revision is None:
            store.dispose()
            raise not_initialised
        if revision != HEAD_REVISION:
            store.dispose()
            raise NotInitialisedError(
                f"assay's store is at schema revision {revision}, this assay expects "
                f"{HEAD_REVISION}: run `assay init` to upgrade it (or upgrade assay)"
            )
        return store

    @property
    def is_memory(self) -> bool:
        return self.dialect == "sqlite" and self.url.database in (None, "", ":memory:")

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None (PostgreSQL, in-memory)."""
        if self.dialect != "sqlite" or self.is_memory:
            return None
        database = self.url.database or ""
        if database.startswith("file:"):
            return None
        return Path(database)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({_describe(self.url)!r})"

    # -- sessions -------------------------------------------------------------------------

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A transaction: commits when the block ends, rolls back if it raises.

        ``readonly`` sessions read one consistent snapshot and, on SQLite, take no write lock
        (a deferred transaction); use them for reads that never write. Database errors leave as
        :class:`AssayError`.
        """
        from sqlalchemy.exc import StatementError

        maker = self._readonly_sessions if readonly else self._sessions
        try:
            with maker() as session, session.begin():
                yield session
        except StatementError as exc:  # DBAPI errors and values the database refused
            raise AssayError(f"store error ({self.dialect}): {_one_line(exc)}") from exc

    # -- schema ---------------------------------------------------------------------------

    def revision(self) -> str | None:
        """The schema revision recorded in ``alembic_version``; None when there is no schema."""
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        try:
            conn = self.engine.connect()
        except DBAPIError as exc:
            raise ConfigError(
                f"cannot open assay's store {_describe(self.url)}: {_one_line(exc)}"
            ) from exc
        with conn:
            conn.execution_options(**{_READONLY: True})
            try:
                with conn.begin():
                    rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            except DBAPIError:
                return None
        if not rows:
            return None
        if len(rows) > 1:
            return ",".join(sorted(str(r[0]) for r in rows))
        return str(rows[0][0])

    def upgrade(self, revision: str = "head") -> None:
        """Run the Alembic migrations up to ``revision`` (head by default)."""
        from alembic import command
        from alembic.config import Config
        from alembic.util.exc import CommandError
        from sqlalchemy.exc import DBAPIError

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        log.info("upgrading assay's store %s to %s", _describe(self.url), revision)
        try:
            with self.engine.connect() as conn:
                sqlite = conn.dialect.name == "sqlite"
                if sqlite:
                    # A type change rebuilds the table on SQLite: with foreign keys on, dropping
                    # the old parent table would cascade into its children. PRAGMA foreign_keys
                    # only changes outside a transaction, so on the raw connection, before BEGIN.
                    conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")
                try:
                    config.attributes["connection"] = conn
                    command.upgrade(config, revision)
                    if sqlite:
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            conn.rollback()
                            raise ConfigError(
                                f"cannot migrate assay's store {_describe(self.url)}: "
                                f"{len(broken)} row(s) would break foreign keys"
                            )
                    conn.commit()
                finally:
                    if sqlite:  # back on, outside any transaction, before the pool takes it back
                        conn.rollback()
                        conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")
        except (DBAPIError, CommandError) as exc:
            raise ConfigError(
                f"cannot migrate assay's store {_describe(self.url)}: {_one_line(exc)}"
            ) from exc


def lock_store(session: Any) -> None:
    """Take the store's write lock now (the audit head row), so writers that read-then-move serialise.

    SQLite write sessions hold it from ``BEGIN IMMEDIATE``; PostgreSQL needs the row lock.
    """
    from sqlalchemy import select

    from assay.store.models import AuditHead

    session.execute(select(AuditHead.id).where(AuditHead.id == 1).with_for_update())


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    if conn.get_execution_options().get(_READONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

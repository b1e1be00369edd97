"""Alembic environment for assay's store.

Run through :meth:`assay.store.store.Store.upgrade`, which passes an open connection in
``config.attributes["connection"]``; a ``sqlalchemy.url`` main option works too (offline SQL
generation or the plain ``alembic`` command). Logging is left to the caller.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from assay.store.models import Base

target_metadata = Base.metadata


def _lock(connection) -> None:  # type: ignore[no-untyped-def]
    # Several processes may initialise the same PostgreSQL store at once: take a transaction
    # advisory lock so they migrate one after another. SQLite serialises through BEGIN IMMEDIATE.
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(7305861733)"))


def run_migrations_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        _lock(connection)
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

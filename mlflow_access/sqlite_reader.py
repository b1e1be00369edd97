"""Read-only fast path into an embedded MLflow registry kept in SQLite (the default backend).

Incident commands read far more than they write: ``assay status`` only reads, a rollback reads
every version of a model and writes one alias. Through ``MlflowClient`` each read costs the
``import mlflow`` (1.3-4 s) plus its store set-up (about 0.7 s); MLflow's registry tables are
plain SQL, so this module answers the reads with the standard library's ``sqlite3`` on a read-only
connection, exactly as MLflow's own SQLAlchemy registry store would: versions MLflow deleted
(``current_stage = 'Deleted_Internal'``) are invisible, aliases come from the registered model.
Writes always go through MLflow.

It is used only when it can be exact: a ``sqlite:///`` tracking URI whose database has the
tables and columns read here, and MLflow workspaces off (``MLFLOW_ENABLE_WORKSPACES`` unset,
no ``MLFLOW_WORKSPACE`` other than ``default``). Otherwise
:func:`open_reader` returns None and the caller uses ``MlflowClient``. A schema MLflow changes
later fails the column check, not the answer.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from assay.mlflow_access.base import ModelVersionInfo, ms_to_datetime
from assay.store.sqlite_readonly import open_readonly, sqlite_path

__all__ = ["SqliteRegistryReader", "open_reader"]

DELETED_STAGE = "Deleted_Internal"
DEFAULT_WORKSPACE = "default"

#: Every column this reader uses, per table. Checked once per connection.
REQUIRED_COLUMNS: dict[str, frozenset[str]] = {
    "registered_models": frozenset({"name", "workspace"}),
    "model_versions": frozenset(
        {
            "name",
            "version",
            "creation_time",
            "description",
            "current_stage",
            "source",
            "run_id",
            "status",
            "workspace",
        }
    ),
    "model_version_tags": frozenset({"key", "value", "name", "version", "workspace"}),
    "registered_model_aliases": frozenset({"alias", "version", "name", "workspace"}),
}


class SqliteRegistryReader:
    """MLflow registry reads on a read-only ``sqlite3`` connection (default workspace)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # one connection, shared by the backend's threads

    def close(self) -> None:
        self._conn.close()

    def _rows(self, sql: str, params: tuple[object, ...] | list[object]) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def model_exists(self, name: str) -> bool:
        rows = self._rows(
            "SELECT 1 FROM registered_models WHERE workspace = ? AND name = ?",
            (DEFAULT_WORKSPACE, name),
        )
        return bool(rows)

    def list_models(self) -> list[str]:
        rows = self._rows(
            "SELECT name FROM registered_models WHERE workspace = ?", (DEFAULT_WORKSPACE,)
        )
        return sorted(r[0] for r in rows)

    def aliases(self, name: str) -> dict[str, str]:
        rows = self._rows(
            "SELECT alias, version FROM registered_model_aliases WHERE workspace = ? AND name = ?",
            (DEFAULT_WORKSPACE, name),
        )
        return {alias: str(version) for alias, version in rows}

    def download_uri(self, name: str, version: str) -> str | None:
        """Where MLflow hands out the files of ``name``/``version`` from (its storage location,
        else its source, as ``get_model_version_download_uri``); None when there is no such
        live version."""
        has_storage = "storage_location" in _columns(self._conn, "model_versions")
        column = "storage_location" if has_storage else "NULL"
        rows = self._rows(
            f"SELECT {column}, source FROM model_versions WHERE workspace = ? AND name = ? "
            "AND version = ? AND (current_stage IS NULL OR current_stage != ?)",
            (DEFAULT_WORKSPACE, name, int(version), DELETED_STAGE),
        )
        if not rows:
            return None
        storage, source = rows[0]
        return storage or source or None

    def versions(self, name: str, version: str | None = None) -> list[ModelVersionInfo]:
        """Live versions of ``name`` (one when ``version`` is given), oldest first, with tags and
        aliases."""
        sql = (
            "SELECT version, source, run_id, status, creation_time, description "
            "FROM model_versions WHERE workspace = ? AND name = ? "
            "AND (current_stage IS NULL OR current_stage != ?)"
        )
        params: list[object] = [DEFAULT_WORKSPACE, name, DELETED_STAGE]
        if version is not None:
            sql += " AND version = ?"
            params.append(int(version))
        rows = self._rows(sql + " ORDER BY version", params)
        if not rows:
            return []
        tags: dict[str, dict[str, str]] = {}
        tag_sql = (
            "SELECT version, key, value FROM model_version_tags WHERE workspace = ? AND name = ?"
        )
        tag_params: list[object] = [DEFAULT_WORKSPACE, name]
        if version is not None:
            tag_sql += " AND version = ?"
            tag_params.append(int(version))
        for v, key, value in self._rows(tag_sql, tag_params):
            tags.setdefault(str(v), {})[key] = value if value is not None else ""
        by_version: dict[str, list[str]] = {}
        for alias, v in self.aliases(name).items():
            by_version.setdefault(v, []).append(alias)
        return [
            ModelVersionInfo(
                name=name,
                version=str(v),
                source=source or "",
                run_id=run_id or None,
                status=str(status),
                tags=tags.get(str(v), {}),
                aliases=sorted(by_version.get(str(v), [])),
                created_at=ms_to_datetime(created),
                description=description or "",
            )
            for v, source, run_id, status, created, description in rows
        ]


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}


def open_reader(tracking_uri: str) -> SqliteRegistryReader | None:
    """A reader for ``tracking_uri`` when the fast path is exact; None when MLflow must answer."""
    path = sqlite_path(tracking_uri)
    if path is None or not path.is_file():
        return None
    # Workspaces (MLflow 3.x, off by default) would make "which workspace" a question for MLflow.
    if os.environ.get("MLFLOW_WORKSPACE", DEFAULT_WORKSPACE) != DEFAULT_WORKSPACE or os.environ.get(
        "MLFLOW_ENABLE_WORKSPACES", ""
    ).strip().lower() in ("1", "true", "yes", "on"):
        return None
    try:
        conn = open_readonly(path, check_same_thread=False)
        for table, needed in REQUIRED_COLUMNS.items():
            if not needed <= _columns(conn, table):
                conn.close()
                return None
    except sqlite3.Error:
        return None
    return SqliteRegistryReader(conn)

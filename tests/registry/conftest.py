"""Fixtures for the registry tests: a real ``mlflow server`` shared by the session."""

from __future__ import annotations

import mlflow_server as server_helper  # tests/mlflow_server.py, on pytest's pythonpath

# URL of an ``mlflow server`` on 127.0.0.1 (sqlite backend, proxied artifacts), one per session.
# Tests that use it are marked ``server`` and ``slow``.
mlflow_server = server_helper.mlflow_server_fixture(scope="session")

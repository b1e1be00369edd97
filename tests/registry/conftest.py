"""Fixtures for the registry tests: a real ``mlflow server`` shared by the session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_server_helper() -> ModuleType:
    """``tests/mlflow_server.py`` (tests is no package; pytest runs in importlib mode)."""
    name = "assay_tests_mlflow_server"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "mlflow_server.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# URL of an ``mlflow server`` on 127.0.0.1 (sqlite backend, proxied artifacts), one per session.
# Tests that use it are marked ``server`` and ``slow``.
mlflow_server = load_server_helper().mlflow_server_fixture(scope="session")

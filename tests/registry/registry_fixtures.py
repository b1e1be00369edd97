"""Helpers shared by the states / status / lineage tests (and the CLI tests of those commands).

Import it by name (pyproject puts this folder on pytest's ``pythonpath``)::

    import registry_fixtures as fx
    home = fx.home_fixture()          # a module-scoped fixture: (home, Registry)

One ASSAY_HOME per test module (``import mlflow`` and MLflow's schema cost seconds); each test
registers models under names of its own (:func:`unique`) so tests do not see each other's state.
Versions are registered through the real ``register_model`` / ``register_dataset`` (watermarking
off: the bytes are not weights).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from store_backends import STORE_BACKENDS, drop_database, fresh_database

CLEARED = ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE")
_counter = itertools.count(1)


def home_fixture() -> Any:
    """A module-scoped fixture yielding ``(home, registry)`` with the environment pointing at it,
    once with a SQLite store and once on PostgreSQL (a database of its own; skipped without
    ``ASSAY_TEST_PG_URL``)."""

    @pytest.fixture(scope="module", params=STORE_BACKENDS)
    def world(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[tuple[Path, Any]]:
        from assay.core.settings import Settings
        from assay.registry.facade import Registry

        home = tmp_path_factory.mktemp("registry") / "home"
        url = fresh_database() if request.param == "postgresql" else None
        try:
            with pytest.MonkeyPatch.context() as mp:
                for var in CLEARED:
                    mp.delenv(var, raising=False)
                mp.setenv("ASSAY_HOME", str(home))
                mp.setenv("ASSAY_ACTOR", "test@assay")
                mp.setenv("HF_HUB_OFFLINE", "1")
                if url:
                    mp.setenv("ASSAY_DB_URL", url)
                Registry.initialise(Settings.from_env())
                registry = Registry.open(Settings.from_env())
                yield home, registry
                registry.store.dispose()
        finally:
            if url:
                drop_database(url)

    return world


def unique(prefix: str) -> str:
    """A model or dataset name no other test in the module uses."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def folder(root: Path, content: str) -> Path:
    """A small model (or dataset) folder with unique bytes."""
    path = root / f"src-{next(_counter)}"
    (path / "sub").mkdir(parents=True)
    (path / "weights.bin").write_bytes(content.encode() + os.urandom(64))
    (path / "sub" / "config.json").write_text('{"layers": 2}')
    return path


def dataset(registry: Any, name: str, root: Path) -> str:
    """Register a dataset version; return its version."""
    from assay.registry.datasets import register_dataset

    return register_dataset(registry, name, folder(root, name)).version


def model(
    registry: Any,
    name: str,
    root: Path,
    *,
    datasets: tuple[str, ...] = (),
    parents: tuple[str, ...] = (),
    alias: str | None = None,
) -> str:
    """Register a model version (``datasets`` as NAME@V, ``parents`` as NAME/V); its version."""
    from assay.core.refs import parse_dataset_ref, parse_model_ref
    from assay.registry.registration import register_model

    result = register_model(
        registry,
        name,
        str(folder(root, name)),
        datasets=[parse_dataset_ref(d, require_version=True) for d in datasets],
        parents=[parse_model_ref(p) for p in parents],
        alias=alias,
        watermark=False,
    )
    return result.version


def mlflow_only_version(
    registry: Any, name: str, root: Path, tags: dict[str, str] | None = None
) -> str:
    """A version created with plain MLflow, behind assay's back."""
    backend = registry.backend
    logged = backend.log_model_dir(folder(root, name), artifact_path="model")
    return backend.create_version(name, logged.source_uri, run_id=logged.run_id, tags=tags).version


def stored_folder(registry: Any, name: str, version: str) -> Path:
    """The version's folder in the (local) artifact store, to tamper with."""
    from assay.mlflow_access.artifacts import local_path_of

    path = local_path_of(registry.backend.get_version(name, version).source)
    assert path is not None and path.is_dir()
    return path


def tamper(registry: Any, name: str, version: str) -> None:
    """Change one byte of the version's weights in the artifact store."""
    weights = stored_folder(registry, name, version) / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0x01
    weights.write_bytes(bytes(data))


class FakeReport:
    """What ``verify_version`` returns, for tests that stub it."""

    def __init__(self, subject: str, ok: bool, problem: str = "1 modified (weights.bin)") -> None:
        self.subject, self.ok, self.files = subject, ok, 2
        self.problem = problem

    def summary(self) -> str:
        return f"verification failed for {self.subject}: {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "ok": self.ok}


def stub_verify(
    monkeypatch: pytest.MonkeyPatch,
    results: dict[tuple[str, str], bool] | None = None,
    *,
    default: bool = True,
) -> list[tuple[str, str]]:
    """Replace ``verify_version``: ok per ``results`` (else ``default``); returns the calls."""
    from assay.registry import uri_verify

    calls: list[tuple[str, str]] = []

    def fake(registry: Any, name: str, version: str, **_: Any) -> FakeReport:
        calls.append((name, str(version)))
        ok = (results or {}).get((name, str(version)), default)
        return FakeReport(f"models:/{name}/{version}", ok)

    monkeypatch.setattr(uri_verify, "verify_version", fake)
    return calls

"""Fixtures for the CLI tests: an initialised ASSAY_HOME, a click runner and state snapshots.

`assay init` runs once per session (in a child process, so every database file is closed and
checkpointed) into a template folder; each test gets its own copy of that folder as
``$ASSAY_HOME``. The template skips MLflow's schema (importing MLflow and creating it costs seconds
and sign/verify/key/audit never touch it); ``test_init_keys.py`` runs a full `assay init` once, as
a slow test.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from assay.cli import cli

_INIT_WITHOUT_MLFLOW = """
from assay.registry.facade import Registry
Registry._initialise_mlflow = lambda self: None
from assay.cli import main
main()
"""


@pytest.fixture(scope="session")
def template_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ASSAY_HOME made by a real `assay init` (once per session)."""
    home = tmp_path_factory.mktemp("assay-template") / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE")
    }
    env.update(ASSAY_HOME=str(home), ASSAY_ACTOR="test@assay", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _INIT_WITHOUT_MLFLOW, "init"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return home


@pytest.fixture
def home(assay_home: Path, template_home: Path) -> Path:
    """An initialised ASSAY_HOME (a copy of the template) with one default ECDSA P-256 key."""
    shutil.copytree(template_home, assay_home, symlinks=True)
    return assay_home


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner: CliRunner) -> Callable[..., Result]:
    """``invoke("sign", path, env={...})``: run the CLI in-process, stderr kept apart."""

    def _invoke(*args: object, env: dict[str, str | None] | None = None, **kw) -> Result:
        return runner.invoke(cli, [str(a) for a in args], env=env, **kw)

    return _invoke


def tree_state(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: file bytes, symlink targets, folders (to spot any change)."""
    state: dict[str, bytes | str] = {}
    if not root.exists():
        return state
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[rel] = f"-> {os.readlink(path)}"
            elif path.is_dir():
                state[rel] = "<dir>"
            else:
                mode = path.stat().st_mode & 0o777
                if mode & 0o400 == 0:
                    state[rel] = f"<unreadable {mode:o}>"
                else:
                    state[rel] = path.read_bytes()
    return state


def home_state(home: Path) -> dict[str, object]:
    """ASSAY_HOME's files plus a full dump of assay's store."""
    files = {
        rel: data
        for rel, data in tree_state(home).items()
        if not (rel.startswith(("assay.db", "mlflow.db")))
    }
    db = home / "assay.db"
    dump: list[str] = []
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            dump = list(conn.iterdump())
        finally:
            conn.close()
    return {"files": files, "db": dump}


@pytest.fixture
def snapshot() -> Callable[..., dict[str, object]]:
    """``snapshot(home, *folders)``: the state of assay's home and of the given folders."""

    def _snapshot(home: Path, *folders: Path) -> dict[str, object]:
        return {"home": home_state(home), **{str(f): tree_state(f) for f in folders}}

    return _snapshot


def audit_size(home: Path) -> int:
    conn = sqlite3.connect(f"file:{home / 'assay.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def audit_events_count() -> Callable[[Path], int]:
    return audit_size


def check_error(result: Result, exit_code: int, *fragments: str) -> str:
    """Assert a failed command: exit code, one ``error: ...`` line on stderr holding fragments."""
    assert result.exit_code == exit_code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def expect_error() -> Callable[..., str]:
    """``expect_error(result, code, "fragment", ...)``: see ``check_error``."""
    return check_error


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small model folder: two weight files, a nested config and an empty file."""
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (root / "extra.bin").write_bytes(b"\x01\x02\x03" * 1000)
    (root / "sub" / "config.json").write_text('{"layers": 2}\n')
    (root / "empty.txt").write_bytes(b"")
    return root

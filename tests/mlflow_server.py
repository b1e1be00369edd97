"""Start and stop a real ``mlflow server`` on 127.0.0.1 for integration tests.

Usage as a context manager::

    with MlflowServer(tmp_path) as server:
        os.environ["MLFLOW_TRACKING_URI"] = server.url

or through :func:`mlflow_server_fixture`, which builds a pytest fixture (see
``tests/conftest.py``).

The server runs with a sqlite backend store under ``root`` and proxied artifacts
(``--serve-artifacts``, MLflow 3's default) stored in ``root/artifacts``; clients see artifact URIs
as ``mlflow-artifacts:/...`` and read them through ``/api/2.0/mlflow-artifacts/artifacts``.

``app_name`` starts ``mlflow server --app-name NAME`` (e.g. ``assay-guard``, the guard of
``assay.integrations.mlflow_guard``); ``env`` adds variables to the server's environment (the guard's
``ASSAY_HOME`` / ``ASSAY_DB_URL``).

It starts in its own process group (``start_new_session=True``) with
``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (otherwise it forks job workers that outlive SIGTERM);
:meth:`MlflowServer.stop` sends SIGTERM to the whole group, then SIGKILL after a timeout, and
checks that no process of the group is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _mlflow_executable() -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "mlflow"]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a reused id owned by someone else
        return False
    return True


class MlflowServer:
    """One ``mlflow server`` process group bound to 127.0.0.1 on a free port."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        port: int | None = None,
        workers: int = 2,
        startup_timeout: float = 90.0,
        app_name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.app_name = app_name
        self.env = dict(env or {})
        self.port = port or free_port()
        self.workers = workers
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "server.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def artifacts_path(self) -> Path:
        return self.root / "artifacts"

    def command(self) -> list[str]:
        return [
            *_mlflow_executable(),
            "server",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--backend-store-uri",
            f"sqlite:///{self.db_path}",
            "--artifacts-destination",
            str(self.artifacts_path),
            "--serve-artifacts",
            *(["--app-name", self.app_name] if self.app_name else []),
        ]

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        self.artifacts_path.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        env.pop("MLFLOW_TRACKING_URI", None)
        env.update(self.env)
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self.url

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise RuntimeError(
            f"mlflow server not healthy after {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; assert nothing is left."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the leader's pid is the group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc.poll()
            if not _group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 5
            while _group_alive(pgid) and time.monotonic() < kill_deadline:
                proc.poll()
                time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        assert not _group_alive(pgid), f"mlflow server processes left in group {pgid}"

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mlflow_server_fixture(
    scope: str = "session", **server_kwargs: object
) -> Callable[..., Iterator[str]]:
    """Build a pytest fixture that yields the URL of a running server.

    ``mlflow_server = mlflow_server_fixture()`` in a conftest gives tests a ``mlflow_server``
    fixture; the server lives for ``scope`` and its files live in a pytest temp folder.
    """
    import pytest

    @pytest.fixture(scope=scope)
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        root = tmp_path_factory.mktemp("mlflow-server")
        with MlflowServer(root, **server_kwargs) as server:  # type: ignore[arg-type]
            yield server.url

    return _fixture

"""Helpers for the serving tests: a registry with sklearn iris models, a real uvicorn server on
127.0.0.1 in a thread, and a small HTTP client (stdlib ``http.client``)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import Request  # at module level: FastAPI resolves handler annotations here

CLEARED = (
    "ASSAY_DB_URL",
    "MLFLOW_TRACKING_URI",
    "ASSAY_KEY",
    "ASSAY_KEY_PASSPHRASE",
    "ASSAY_ENFORCE",
)

POLICY = """
serving:
  rate_per_second: 1000
  burst: 1000
  max_body_bytes: 8192
  request_timeout_s: 2
  sample_rate: 1.0
  answer_marks: 0.0
  extraction: {min_queries: 20, threshold: 0.9, playbook: true}
  clients:
    tiny: {rate_per_second: 0.001, burst: 3}
"""


@contextmanager
def serve_world(
    root: Path, backend: str, policy: str, models: dict[Any, Path], clients: Iterable[str]
) -> Iterator[dict[str, Any]]:
    """An initialised registry under ``root`` on ``backend`` ("sqlite" or "postgresql": a fresh
    database, dropped after) with the serving ``policy`` set and a key for each client: the
    ``world`` the serving tests share per module."""
    import pytest
    from store_backends import drop_database, fresh_database

    from assay.core.settings import Settings
    from assay.registry.facade import Registry
    from assay.registry.serving_clients import add_client
    from assay.trust.policy import parse_policy_text
    from assay.trust.policy_service import set_policy

    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(root / "home"))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        mp.setenv("HF_HUB_OFFLINE", "1")
        db = fresh_database() if backend == "postgresql" else None
        if db:
            mp.setenv("ASSAY_DB_URL", db)
        Registry.initialise(Settings.from_env())
        registry = Registry.open(Settings.from_env())
        set_policy(registry, parse_policy_text(policy))
        keys = {n: add_client(registry, n) for n in clients}
        try:
            yield {"registry": registry, "root": root, "models": models, "keys": keys}
        finally:
            registry.store.dispose()
            if db:
                drop_database(db)


def service_for(world: dict[str, Any], uri: str, interval: float = 0.3) -> Any:
    """A service on its own Registry object (the tests may break its store)."""
    from assay.core.settings import Settings
    from assay.registry.facade import Registry
    from assay.serving._follower import start_service

    registry = Registry.open(Settings.from_env())
    return start_service(registry, uri, interval=interval, workdir=world["root"] / "work")


def save_iris_model(folder: Path, c: float) -> Path:
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(C=c, max_iter=500).fit(x, y)
    mlflow.sklearn.save_model(
        model, str(folder), serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE
    )
    return folder


def register_known_good(registry: Any, name: str, folder: Path, alias: str | None = None) -> str:
    from assay.registry.registration import register_model
    from assay.registry.states import mark, promote

    version = register_model(registry, name, str(folder), watermark=False).version
    mark(registry, name, version, "known-good", reason="test")
    if alias:
        promote(registry, name, version, alias=alias)
    return version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(service: Any) -> Iterator[int]:
    """A real uvicorn server for ``service`` on 127.0.0.1; yields its port."""
    import uvicorn

    from assay.serving._app import create_app
    from assay.serving.server import _uvicorn_options

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), **_uvicorn_options("127.0.0.1", port))
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)
        service.stop()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | str | dict | None = None,
    *,
    key: str | None = None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        hdrs = {"Content-Type": content_type, **(headers or {})}
        if key:
            hdrs["Authorization"] = f"Bearer {key}"
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_for(predicate: Any, bound_s: float = 60.0, step: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``bound_s`` passed (a bound, not a timing assertion)."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


@contextmanager
def endpoint(answer: Any, token: str | None = None) -> Iterator[str]:
    """Serve ``answer(rows) -> (status, body bytes, headers)`` at /invocations; yields the URL."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI()

    @app.post("/invocations")
    async def invocations(request: Request) -> Any:
        if token is not None and request.headers.get("authorization") != f"Bearer {token}":
            return Response(
                json.dumps({"error_code": "UNAUTHENTICATED", "message": "unknown API key"}),
                status_code=401,
            )
        rows = json.loads(await request.body())["inputs"]
        status, body, headers = answer(rows)
        return Response(body, status_code=status, headers=headers)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)

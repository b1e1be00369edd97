"""Run ``assay serve`` under uvicorn (one process, or ``--workers N`` processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["app_from_env", "serve"]

CONFIG_ENV = "ASSAY_SERVE_CONFIG"
DEFAULT_HEADER_TIMEOUT_S = 10.0  # serving/_header_timeout.py's default
DEFAULT_LIMIT_CONCURRENCY = 1000


def _uvicorn_options(
    host: str,
    port: int,
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
    limit_concurrency: int = DEFAULT_LIMIT_CONCURRENCY,
) -> dict[str, Any]:
    from assay.serving._header_timeout import protocol

    return {
        "host": host,
        "port": port,
        "log_level": "warning",
        "http": protocol(header_timeout),  # h11 with a deadline for the request head
        "timeout_keep_alive": 5,  # idle keep-alive connections close after 5 s
        "limit_concurrency": limit_concurrency,  # beyond this, 503 instead of unbounded memory
        "h11_max_incomplete_event_size": 64 * 1024,  # bounded request line and headers
        "server_header": False,
    }


def app_from_env() -> Any:
    """uvicorn factory for worker processes: each loads and verifies on its own."""
    from assay.core.settings import Settings
    from assay.registry.facade import Registry
    from assay.serving._app import create_app
    from assay.serving._follower import start_service

    config = json.loads(os.environ[CONFIG_ENV])
    registry = Registry.open(Settings.from_env())
    return create_app(start_service(registry, config["uri"], interval=config["interval"]))


def serve(
    registry: Any,
    uri: str,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    interval: float = 3.0,
    workdir: Path | None = None,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
    limit_concurrency: int = DEFAULT_LIMIT_CONCURRENCY,
) -> None:
    """Serve until interrupted; the first load must pass the decision (``IntegrityError``).

    ``header_timeout``: seconds a connection may take to send a request head;
    ``limit_concurrency``: connections and requests at once (more get 503)."""
    import uvicorn

    from assay.serving._app import create_app
    from assay.serving._follower import start_service

    options = _uvicorn_options(
        host, port, header_timeout=header_timeout, limit_concurrency=limit_concurrency
    )
    if workers > 1:
        os.environ[CONFIG_ENV] = json.dumps({"uri": uri, "interval": interval})
        start_service(registry, uri, interval=interval, workdir=workdir).stop()  # fail fast here
        uvicorn.run(
            "assay.serving.server:app_from_env",
            factory=True,
            workers=workers,
            **options,
        )
        return
    service = start_service(registry, uri, interval=interval, workdir=workdir)
    try:
        uvicorn.run(create_app(service), **options)
    finally:
        service.stop()

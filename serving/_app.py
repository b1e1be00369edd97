"""The FastAPI application of ``assay serve`` (the web stack of MLflow's own scoring server).

``GET /ping``, ``/health`` (200 once a verified version is loaded), ``/version`` (MLflow's
version, as ``mlflow models serve``), ``POST /invocations`` (MLflow's scoring protocol), and
``GET /assay/status`` (the serving version, swaps, refused versions, queued store writes; it
takes a client key like ``/invocations`` when keys are required).
Every answer names the version that produced it in ``X-Assay-Version``.

A request to ``/invocations`` is: body read with a size limit and a time limit (413, 408) ->
API key (401 unknown or revoked, 403 blocked) -> parsed by MLflow's parser (400, 415) -> rows
limit -> token bucket and daily quota (429) -> predicted on the version loaded when the request
started -> answer marks -> query log and extraction detector (off the request path). The marks and
the detector read the rows the model receives (:mod:`assay.serving._features`), whatever the
request's form; the volume signal counts every row.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request  # at module level: FastAPI resolves the handler's annotations here

from assay.serving._protocol import (
    ProtocolError,
    error_body,
    parse_request,
    predictions_json,
    row_count,
)

if TYPE_CHECKING:
    from assay.serving._follower import Service

__all__ = ["create_app"]

log = logging.getLogger(__name__)
MAX_SAMPLE_CHARS = 64 * 1024
MAX_OBSERVED_ROWS = 512  # rows of one request the extraction detector sees (bounded CPU)
VERSION_HEADER = "X-Assay-Version"


async def _read_body(request: Any, limit: int, timeout: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ProtocolError(
                    413, "INVALID_PARAMETER_VALUE", f"request body larger than {limit} bytes"
                )
        except ValueError as exc:
            raise ProtocolError(400, "BAD_REQUEST", "bad Content-Length") from exc

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ProtocolError(
                    413, "INVALID_PARAMETER_VALUE", f"request body larger than {limit} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout)
    except (asyncio.TimeoutError, TimeoutError) as exc:
        raise ProtocolError(408, "REQUEST_TIMEOUT", "request body not received in time") from exc


def _secret(request: Any) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()[:200] or None
    key = request.headers.get("x-api-key")
    return key.strip()[:200] if key else None


def _client(service: Service, request: Any) -> str:
    from assay.registry.serving_clients import hash_secret

    secret = _secret(request)
    if secret is None:
        if service.policy.require_api_key:
            raise ProtocolError(
                401, "UNAUTHENTICATED", "an API key is required (Authorization: Bearer KEY)"
            )
        return "anonymous"
    client = service.clients.get(hash_secret(secret))
    if client is None or client.revoked_at is not None:
        raise ProtocolError(401, "UNAUTHENTICATED", "unknown or revoked API key")
    if client.blocked_at is not None:
        raise ProtocolError(403, "PERMISSION_DENIED", f"client {client.name!r} is blocked")
    return client.name


def _limits(service: Service, client: str) -> tuple[float, int, int]:
    limits = service.policy.limits_for(client)
    rate, burst = limits.rate_per_second, limits.burst
    for c in service.clients.values():
        if c.name == client and c.throttle:
            rate = min(rate, float(c.throttle["rate_per_second"]))
            burst = min(burst, int(c.throttle["burst"]))
    return rate, burst, limits.daily_quota


def _predict(loaded: Any, parsed: Any) -> Any:
    import inspect

    from mlflow.exceptions import MlflowException

    model = loaded.model
    try:
        if parsed.params is not None and "params" in inspect.signature(model.predict).parameters:
            return model.predict(parsed.data, params=parsed.params)
        return model.predict(parsed.data)
    except MlflowException as exc:
        raise ProtocolError(
            400, "BAD_REQUEST", f"the model refused the input: {exc.message}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - as MLflow: a model error is the input's fault
        raise ProtocolError(
            400, "BAD_REQUEST", f"the model could not evaluate the input ({type(exc).__name__})"
        ) from exc


def _log_job(
    service: Service,
    client: str,
    version: str | None,
    status: int,
    rows: int,
    body: bytes,
    answer: bytes | None,
    sampled: bool,
):
    from assay.store.models import utcnow

    entry = {
        "client": client,
        "model_name": service.name,
        "version": version,
        "status": status,
        "rows": rows,
        "input_digest": hashlib.sha256(body).hexdigest() if body else None,
        "answer_digest": hashlib.sha256(answer).hexdigest() if answer is not None else None,
        "sample": body[:MAX_SAMPLE_CHARS].decode("utf-8", "replace") if sampled else None,
        "at": utcnow(),
    }
    return entry  # a row the writer inserts in bulk


def create_app(service: Service) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI(title="assay serve", docs_url=None, redoc_url=None, openapi_url=None)

    def serving() -> Any:
        """The loaded version, or None when none is loaded or a later check refused it."""
        current, withheld = service.current, service.withheld
        if current is None or (withheld is not None and withheld.version == current.version):
            return None
        return current

    def headers() -> dict[str, str]:
        current = serving()
        return {VERSION_HEADER: current.version} if current else {}

    def refused_now() -> Any:
        withheld = service.withheld
        message = (
            f"{service.name}/{withheld.version} is refused now ({withheld.code}): it is not "
            "answered with until the alias names a version that passes the decision"
            if withheld is not None
            else f"no version of {service.name} is loaded"
        )
        return Response(
            content=error_body("MODEL_REFUSED", message),
            status_code=503,
            media_type="application/json",
        )

    def error(status: int, code: str, message: str, extra: dict[str, str] | None = None):
        return Response(
            content=error_body(code, message),
            status_code=status,
            media_type="application/json",
            headers={**headers(), **(extra or {})},
        )

    async def ping() -> Any:
        ok = serving() is not None
        return Response(
            content="\n",
            status_code=200 if ok else (503 if service.current is not None else 404),
            media_type="application/json",
            headers=headers(),
        )

    app.get("/ping")(ping)
    app.get("/health")(ping)

    @app.get("/version")
    async def version() -> Any:
        from mlflow.version import VERSION

        return Response(
            content=VERSION, status_code=200, media_type="application/json", headers=headers()
        )

    @app.get("/assay/status")
    async def status(request: Request) -> Any:
        try:
            _client(service, request)  # the same key as /invocations when keys are required
        except ProtocolError as exc:
            return error(exc.status, exc.code, str(exc))
        current, withheld = serving(), service.withheld
        body = {
            "model": service.name,
            "alias": service.alias,
            "version": current.version if current else None,
            "withheld": None if withheld is None or current else asdict(withheld),
            "swaps": service.stats.swaps,
            "refused": service.stats.refused,
            "check_errors": service.stats.check_errors,
            "last_check_error": service.stats.last_check_error,
            "queued_writes": service.writer.pending,
            "dropped_log_rows": service.writer.dropped,
        }
        return Response(content=json.dumps(body), media_type="application/json", headers=headers())

    @app.post("/invocations")
    async def invocations(request: Request) -> Any:
        policy = service.policy
        loaded = serving()  # this request answers with this version, even across a swap
        if loaded is None:
            return refused_now()
        client, body, rows = "unknown", b"", 0
        try:
            body = await _read_body(request, policy.max_body_bytes, policy.request_timeout_s)
            client = _client(service, request)
            content_type = request.headers.get("content-type")
            outcome = await asyncio.wait_for(
                asyncio.to_thread(_handle, service, loaded, client, body, content_type),
                policy.request_timeout_s,
            )
            rows, answer = outcome.rows, outcome.answer
            if outcome.limited is not None:
                message, wait = outcome.limited
                service.writer.put(
                    _log_job(service, client, loaded.version, 429, rows, body, None, False)
                )
                return error(
                    429,
                    "REQUEST_LIMIT_EXCEEDED",
                    message,
                    {"Retry-After": str(max(1, round(wait)))},
                )
        except ProtocolError as exc:
            if exc.status != 401:  # unauthenticated noise is not logged per request
                service.writer.put(
                    _log_job(service, client, loaded.version, exc.status, rows, body, None, False)
                )
            return error(exc.status, exc.code, str(exc))
        except (asyncio.TimeoutError, TimeoutError):
            return error(504, "DEADLINE_EXCEEDED", "request processing time exceeded the limit")
        except Exception as exc:  # noqa: BLE001 - never a traceback or a plain-text 500
            log.exception("serving: unexpected error")
            return error(500, "INTERNAL_ERROR", f"internal error ({type(exc).__name__})")
        sampled = random.random() < policy.sample_rate
        service.writer.put(
            _log_job(service, client, loaded.version, 200, rows, body, answer, sampled)
        )
        return Response(
            content=answer,
            status_code=200,
            media_type="application/json",
            headers={VERSION_HEADER: loaded.version},
        )

    return app


@dataclass
class _Outcome:
    rows: int
    answer: bytes | None = None
    limited: tuple[str, float] | None = None


def _handle(
    service: Service, loaded: Any, client: str, body: bytes, content_type: str | None
) -> _Outcome:
    """Parse, check the rows and limits, answer: one worker-thread hop per request."""
    policy = service.policy
    parsed = parse_request(body, content_type, loaded.model, loaded.input_schema)
    rows = row_count(parsed.data)
    if rows > policy.max_rows:
        raise ProtocolError(
            400, "INVALID_PARAMETER_VALUE", f"more than {policy.max_rows} rows in one request"
        )
    rate, burst, quota = _limits(service, client)
    limited = service.limiter.check(client, rows, rate=rate, burst=burst, quota=quota)
    if limited is not None:
        return _Outcome(rows, limited=limited)
    return _Outcome(rows, answer=_answer(service, loaded, client, parsed, rows))


def _markable(predictions: Any, count: int) -> bool:
    """Whether answer marks could apply to ``predictions`` (one answer per input row)."""
    if hasattr(predictions, "to_numpy") or not hasattr(predictions, "__len__"):
        return False
    try:
        return len(predictions) == count and not isinstance(predictions, (str, bytes, dict))
    except TypeError:
        return False


def _answer(service: Service, loaded: Any, client: str, parsed: Any, count: int) -> bytes:
    from assay.serving._features import request_rows

    predictions = _predict(loaded, parsed)
    features = request_rows(parsed.data, loaded.input_schema, count)
    fraction = service.policy.marks_for(service.name)
    if service.marker is not None and fraction > 0:
        if features.marked is None and _markable(predictions, count):
            # fail closed: an answer that cannot be tied to its row is not given unmarked
            raise ProtocolError(
                400,
                "INVALID_PARAMETER_VALUE",
                "the input cannot be split into its rows (answer marks need one row per answer):"
                " send columns of equal length or one record per row",
            )
        if features.marked is not None:
            from assay.serving._answer_marks import mark_job

            predictions, marks = service.marker.apply(
                loaded,
                client,
                features.marked,
                predictions,
                fraction,
                service.policy.answer_mark_bound,
            )
            if marks:
                service.writer.put(
                    mark_job(loaded.name, loaded.version, client, marks), important=True
                )
    if service.detector is not None:
        numeric = features.numeric
        observed = numeric[:MAX_OBSERVED_ROWS] if numeric is not None else None
        service.detector.submit(client, observed, count)  # volume: every row
    try:
        return predictions_json(predictions, parsed.unified_llm).encode()
    except Exception as exc:  # noqa: BLE001 - an answer MLflow cannot encode
        raise ProtocolError(
            500, "INTERNAL_ERROR", f"cannot encode the answer ({type(exc).__name__})"
        ) from exc

"""A black-box suspect: an HTTP endpoint speaking MLflow's scoring protocol.

``assay trace --endpoint URL`` replays the recorded answer marks against ``URL/invocations``
(``POST``, ``{"inputs": [[...], ...]}``, JSON) and reads ``{"predictions": [...]}``: labels or
numbers, or rows of numbers (scores, embeddings). Bounded: a timeout per request and a deadline for the whole replay, a cap
on the bytes read per answer, rows per request, and no redirects (a credential is never sent
on to another host) and no proxies from the environment; the answer is read in chunks against the
request's timeout (a slow drip is cut off) and parsed with bounded depth. Any refusal or malformed answer stops
the trace with a one-line error: a partial replay is never scored.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from assay.core.errors import AssayError, ConfigError, FormatError
from assay.core.safe_json import loads_untrusted

__all__ = ["EndpointSuspect", "parse_header"]

MAX_ANSWER_BYTES = 16 * 1024 * 1024
BATCH = 256
TIMEOUT_S = 30.0
DEADLINE_S = 600.0
_CHUNK = 64 * 1024


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` -> (name, value); one line, a token name."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or any(c.isspace() or c in '()<>@,;:\\"/[]?={}' for c in name):
        raise ConfigError(f"--header takes 'Name: value', not {text[:60]!r}")
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(f"--header {name}: the value has a line break")
    return name, value


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        raise FormatError(f"the endpoint answered a redirect ({code}); assay does not follow it")


def _invocations_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--endpoint takes an http(s) URL, not {url[:80]!r}")
    if parts.username or parts.password:
        raise ConfigError("--endpoint: put credentials in --api-key or --header, not in the URL")
    path = parts.path.rstrip("/")
    if not path.endswith("/invocations"):
        path += "/invocations"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _answer(value: Any) -> Any:
    """One prediction: a label or number, or a row of numbers (scores or an embedding)."""
    if isinstance(value, list):
        if not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise FormatError("the endpoint's predictions are neither labels nor score rows")
        return [float(v) for v in value]
    if isinstance(value, dict) or value is None:
        raise FormatError("the endpoint's predictions are neither labels nor score rows")
    return value


def _label(value: Any) -> Any:
    return max(range(len(value)), key=value.__getitem__) if isinstance(value, list) else value


class EndpointSuspect:
    """``predict(rows) -> labels`` through an MLflow scoring endpoint."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = TIMEOUT_S,
        deadline_s: float = DEADLINE_S,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.url = _invocations_url(url)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + deadline_s
        self.max_answer_bytes = max_answer_bytes
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self.queries = 0

    def _post(self, rows: list[Any]) -> list[Any]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AssayError("the endpoint replay ran past its deadline; nothing was scored")
        body = json.dumps({"inputs": rows}).encode()
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        until = time.monotonic() + min(self.timeout_s, left)
        try:
            with self.opener.open(req, timeout=min(self.timeout_s, left)) as resp:
                raw = self._read(resp, until)
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode("utf-8", "replace")
            with contextlib.suppress(FormatError, AttributeError):
                detail = loads_untrusted(detail, what="error", error=FormatError).get(
                    "message", detail
                )
            raise AssayError(
                f"the endpoint refused the replay: HTTP {exc.code}: {' '.join(str(detail).split())[:200]}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AssayError(
                f"the endpoint cannot be reached: {' '.join(str(reason).split())[:200]}"
            ) from None
        if len(raw) > self.max_answer_bytes:
            raise FormatError(f"the endpoint's answer is larger than {self.max_answer_bytes} bytes")
        answer = loads_untrusted(raw, what="the endpoint's answer", error=FormatError)
        predictions = answer.get("predictions") if isinstance(answer, dict) else answer
        if not isinstance(predictions, list) or len(predictions) != len(rows):
            raise FormatError(
                f"the endpoint answered {len(predictions) if isinstance(predictions, list) else 'no'}"
                f" predictions for {len(rows)} inputs"
            )
        self.queries += len(rows)
        return [_answer(v) for v in predictions]

    def _read(self, resp: Any, until: float) -> bytes:
        """The answer's body, read in chunks against the request's deadline: the socket timeout
        bounds each read only, so an endpoint dripping a byte at a time is cut off here."""
        chunks: list[bytes] = []
        size = 0
        while size <= self.max_answer_bytes:
            if time.monotonic() > until:
                raise AssayError(
                    f"the endpoint did not finish its answer within {self.timeout_s:g} s "
                    "(--timeout); nothing was scored"
                )
            chunk = resp.read1(min(_CHUNK, self.max_answer_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def outputs(self, rows: Any) -> list[Any]:
        """Raw answers: labels, numbers, or rows of numbers (scores read by the trace)."""
        rows = [list(r) for r in rows]
        out: list[Any] = []
        for start in range(0, len(rows), BATCH):
            out.extend(self._post(rows[start : start + BATCH]))
        return out

    def predict(self, rows: Any) -> list[Any]:
        """Labels (score rows read by argmax)."""
        return [_label(v) for v in self.outputs(rows)]

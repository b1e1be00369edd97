"""MLflow's scoring protocol: request parsing (MLflow's own functions) and error JSON.

Requests are parsed by ``mlflow.pyfunc.scoring_server`` itself (``_parse_json_data`` for
``inputs``, ``instances``, ``dataframe_split`` and ``dataframe_records``; ``parse_csv_input`` for
``text/csv``) and answers are written by its ``predictions_to_json``, so clients of ``mlflow
models serve`` see the same formats. Error bodies have MLflow's shape,
``{"error_code": "...", "message": "..."}``, with one-line messages clipped to a bounded length
(MLflow's own messages quote the whole input).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Parsed", "ProtocolError", "error_body", "parse_request", "predictions_json"]

MAX_MESSAGE = 300
CONTENT_JSON = "application/json"
CONTENT_CSV = "text/csv"


class ProtocolError(Exception):
    """A request the server refuses: HTTP status, MLflow error code, one-line message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def clip(message: str) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": clip(message)}).encode()


@dataclass
class Parsed:
    data: Any
    params: dict[str, Any] | None
    unified_llm: bool


def parse_request(body: bytes, content_type: str | None, model: Any, schema: Any) -> Parsed:
    """Parse a request body as ``mlflow models serve`` does (JSON and CSV)."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server as ss

    parts = [p.strip() for p in (content_type or "").split(";")]
    mime, params = parts[0].lower(), dict(p.partition("=")[::2] for p in parts[1:] if p)
    if params.get("charset", "utf-8").lower() != "utf-8" or set(params) - {"charset"}:
        raise ProtocolError(
            415,
            "BAD_REQUEST",
            "the scoring server takes UTF-8 without other content-type parameters",
        )
    try:
        if mime == CONTENT_JSON:
            parsed = ss._parse_json_data(body, model.metadata, schema)
            return Parsed(parsed.data, parsed.params, parsed.is_unified_llm_input)
        if mime == CONTENT_CSV:
            from io import StringIO

            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(400, "BAD_REQUEST", "the CSV body is not UTF-8") from exc
            return Parsed(ss.parse_csv_input(StringIO(text), schema=schema), None, False)
    except MlflowException as exc:
        raise ProtocolError(400, str(exc.error_code or "BAD_REQUEST"), exc.message) from exc
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ProtocolError(400, "BAD_REQUEST", f"malformed input: {exc}") from exc
    raise ProtocolError(
        415,
        "BAD_REQUEST",
        f"content type must be {CONTENT_JSON} or {CONTENT_CSV}, got {mime or 'none'!r}",
    )


def predictions_json(predictions: Any, unified_llm: bool) -> str:
    from io import StringIO

    from mlflow.pyfunc import scoring_server as ss

    out = StringIO()
    if unified_llm:
        ss.unwrapped_predictions_to_json(predictions, out)
    else:
        ss.predictions_to_json(predictions, out)
    return out.getvalue()


def row_count(data: Any) -> int:
    """Rows in a parsed input (a DataFrame, an array, a dict of columns, a list)."""
    shape = getattr(data, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    if isinstance(data, dict):
        lengths = []
        for value in data.values():
            inner = getattr(value, "shape", None)
            if inner is not None:
                lengths.append(int(inner[0]) if len(inner) else 1)
            elif isinstance(value, (list, tuple)):
                lengths.append(len(value))
        return max(lengths, default=1)
    if isinstance(data, (list, tuple)):
        return len(data)
    return 1

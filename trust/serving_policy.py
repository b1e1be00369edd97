"""The ``serving:`` section of the policy: limits, logging, detection and answer marks of
``assay serve``.

::

    serving:
      require_api_key: true       # anonymous queries are refused (401)
      rate_per_second: 10         # token bucket per client (refill rate)
      burst: 20                   # bucket size
      daily_quota: 10000          # queries (rows) per client per UTC day
      max_body_bytes: 1048576     # larger request bodies are refused (413)
      max_rows: 10000             # rows per request
      request_timeout_s: 30       # reading the body and predicting, per request
      sample_rate: 0.01           # fraction of queries whose input is kept in the query log
      retention_days: 30          # query log rows older than this are pruned
      exact_models: []            # models that must answer exactly: no answer marks
      answer_marks: 0.005         # fraction of queries answered with a keyed alternative
      answer_mark_bound: 0.05     # regression/embedding marks: |perturbation| = this * |answer|
      extraction:
        threshold: 0.90           # Shapiro-Wilk W below this flags the client (PRADA delta)
        min_queries: 50           # distances needed before the test runs
        window: 2000              # most recent queries kept per client
        volume_per_day: 5000      # rows per client per day that alone raise a volume alert
        playbook: false           # start the model-extraction playbook on an alert
      clients:                    # per-client overrides
        partner-a: {rate_per_second: 100, burst: 200, daily_quota: 1000000}

Every key is optional; unknown keys and values of the wrong type are refused like the rest of
the policy (``FormatError``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from assay.core.errors import FormatError

__all__ = ["ClientLimits", "ExtractionPolicy", "ServingPolicy", "parse_serving"]


@dataclass(frozen=True)
class ClientLimits:
    """A token bucket and a daily quota."""

    rate_per_second: float = 10.0
    burst: int = 20
    daily_quota: int = 10_000


@dataclass(frozen=True)
class ExtractionPolicy:
    """PRADA-style detection settings."""

    threshold: float = 0.90
    min_queries: int = 50
    window: int = 2000
    volume_per_day: int = 5000
    playbook: bool = False


@dataclass(frozen=True)
class ServingPolicy:
    """What ``assay serve`` enforces."""

    require_api_key: bool = True
    rate_per_second: float = 10.0
    burst: int = 20
    daily_quota: int = 10_000
    max_body_bytes: int = 1024 * 1024
    max_rows: int = 10_000
    request_timeout_s: float = 30.0
    sample_rate: float = 0.01
    retention_days: int = 30
    exact_models: tuple[str, ...] = ()
    answer_marks: float = 0.005
    answer_mark_bound: float = 0.05
    extraction: ExtractionPolicy = field(default_factory=ExtractionPolicy)
    clients: dict[str, ClientLimits] = field(default_factory=dict)

    def limits_for(self, client: str) -> ClientLimits:
        default = ClientLimits(self.rate_per_second, self.burst, self.daily_quota)
        return self.clients.get(client, default)

    def marks_for(self, model: str) -> float:
        """The fraction of answers marked for ``model`` (0 for models that must answer exactly)."""
        return 0.0 if model in self.exact_models else self.answer_marks

    def document(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["exact_models"] = list(self.exact_models)
        doc["clients"] = {k: asdict(v) for k, v in sorted(self.clients.items())}
        return doc


DEFAULT_SERVING = ServingPolicy()


def _number(
    data: dict[str, Any], key: str, default: Any, *, lo: float, hi: float, integer: bool
) -> Any:
    value = data.get(key, default)
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise FormatError(f"policy: serving.{key} must be {kind} from {lo:g} to {hi:g}")
    return int(value) if integer else float(value)


def _check_keys(data: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise FormatError(f"policy: {where} must be a mapping")
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise FormatError(
            f"policy: unknown key {unknown[0]!r} under {where} (known: {', '.join(sorted(allowed))})"
        )
    return data


def _limits(data: Any, where: str, base: ClientLimits) -> ClientLimits:
    data = _check_keys(data, {f.name for f in fields(ClientLimits)}, where)
    return ClientLimits(
        rate_per_second=_number(
            data, "rate_per_second", base.rate_per_second, lo=0.001, hi=1e6, integer=False
        ),
        burst=_number(data, "burst", base.burst, lo=1, hi=10**7, integer=True),
        daily_quota=_number(data, "daily_quota", base.daily_quota, lo=1, hi=10**12, integer=True),
    )


def _extraction(data: Any) -> ExtractionPolicy:
    data = _check_keys(data, {f.name for f in fields(ExtractionPolicy)}, "serving.extraction")
    base = ExtractionPolicy()
    playbook = data.get("playbook", base.playbook)
    if not isinstance(playbook, bool):
        raise FormatError("policy: serving.extraction.playbook must be true or false")
    return ExtractionPolicy(
        threshold=_number(data, "threshold", base.threshold, lo=0.0, hi=1.0, integer=False),
        min_queries=_number(data, "min_queries", base.min_queries, lo=3, hi=5000, integer=True),
        window=_number(data, "window", base.window, lo=10, hi=100_000, integer=True),
        volume_per_day=_number(
            data, "volume_per_day", base.volume_per_day, lo=1, hi=10**12, integer=True
        ),
        playbook=playbook,
    )


def parse_serving(data: Any) -> ServingPolicy:
    """The ``serving:`` section; ``FormatError`` naming the first problem."""
    if data is None:
        return DEFAULT_SERVING
    data = _check_keys(data, {f.name for f in fields(ServingPolicy)}, "serving")
    base = DEFAULT_SERVING
    require = data.get("require_api_key", base.require_api_key)
    if not isinstance(require, bool):
        raise FormatError("policy: serving.require_api_key must be true or false")
    exact = data.get("exact_models", [])
    if not isinstance(exact, list) or not all(isinstance(v, str) and v for v in exact):
        raise FormatError("policy: serving.exact_models must be a list of model names")
    if len(exact) > 1000:
        raise FormatError("policy: serving.exact_models lists more than 1000 names")
    limits = _limits(
        {k: data[k] for k in ("rate_per_second", "burst", "daily_quota") if k in data},
        "serving",
        ClientLimits(),
    )
    clients_in = data.get("clients") or {}
    if not isinstance(clients_in, dict) or len(clients_in) > 10_000:
        raise FormatError("policy: serving.clients must map at most 10000 client names to limits")
    clients = {}
    for name, value in clients_in.items():
        if not isinstance(name, str) or not name:
            raise FormatError("policy: serving.clients keys must be client names")
        clients[name] = _limits(value, f"serving.clients.{name}", limits)
    return ServingPolicy(
        require_api_key=require,
        rate_per_second=limits.rate_per_second,
        burst=limits.burst,
        daily_quota=limits.daily_quota,
        max_body_bytes=_number(
            data, "max_body_bytes", base.max_body_bytes, lo=64, hi=2**31, integer=True
        ),
        max_rows=_number(data, "max_rows", base.max_rows, lo=1, hi=10**7, integer=True),
        request_timeout_s=_number(
            data, "request_timeout_s", base.request_timeout_s, lo=0.1, hi=3600, integer=False
        ),
        sample_rate=_number(data, "sample_rate", base.sample_rate, lo=0.0, hi=1.0, integer=False),
        retention_days=_number(
            data, "retention_days", base.retention_days, lo=1, hi=36500, integer=True
        ),
        exact_models=tuple(dict.fromkeys(exact)),
        answer_marks=_number(
            data, "answer_marks", base.answer_marks, lo=0.0, hi=0.5, integer=False
        ),
        answer_mark_bound=_number(
            data, "answer_mark_bound", base.answer_mark_bound, lo=0.0, hi=1.0, integer=False
        ),
        extraction=_extraction(data.get("extraction") or {}),
        clients=clients,
    )

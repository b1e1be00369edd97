"""Per-client token buckets and daily quotas (in memory, per server process)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = ["Limiter", "TokenBucket"]


@dataclass
class TokenBucket:
    rate: float
    capacity: float
    tokens: float
    stamp: float

    def take(self, n: float, now: float) -> float:
        """0 when ``n`` tokens were taken, else the seconds until they would be there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if n > self.capacity:  # never satisfiable: as if it needed a full bucket
            n = self.capacity
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


class Limiter:
    """``check(client, rows, rate, burst, quota)`` -> None (allowed) or a one-line reason."""

    def __init__(self, used_today: dict[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._day = _today()
        self._used: dict[str, int] = dict(used_today or {})

    def check(
        self, client: str, rows: int, *, rate: float, burst: int, quota: int
    ) -> tuple[str, float] | None:
        """None when allowed; else (message, retry-after seconds). A request costs one token;
        the daily quota counts rows."""
        now = time.monotonic()
        with self._lock:
            day = _today()
            if day != self._day:
                self._day, self._used = day, {}
            used = self._used.get(client, 0)
            if used + rows > quota:
                return f"daily quota of {quota} rows used up for client {client!r}", 3600.0
            bucket = self._buckets.get(client)
            if bucket is None or bucket.rate != rate or bucket.capacity != burst:
                tokens = burst if bucket is None else min(bucket.tokens, burst)
                bucket = TokenBucket(rate, float(burst), float(tokens), now)
                self._buckets[client] = bucket
            wait = bucket.take(1.0, now)
            if wait > 0:
                return (
                    f"rate limit of {rate:g}/s (burst {burst}) exceeded for client {client!r}",
                    wait,
                )
            self._used[client] = used + rows
            return None

"""A PRADA-style model-extraction detector (Juuti et al., EuroS&P 2019), per client.

For each new query ``x`` of a client, the minimum L2 distance to that client's earlier queries
(the most recent ``window``) is added to the client's distance list (exact repeats are skipped). Benign traffic gives
distances close to normally distributed; extraction attacks (synthetic and random queries,
queries crafted near earlier ones) do not. When a client has ``min_queries`` distances, the
Shapiro-Wilk statistic ``W`` of them is computed (``scipy.stats.shapiro``); ``W`` below the
policy's ``threshold`` (PRADA's delta, default 0.90; tune it per model: replayed digits test-set traffic
gives W 0.93-0.97, synthetic JbDA-style queries about 0.2) is a finding. Like PRADA, it does not
see attacks whose queries are themselves natural or uniformly random (their distances look
benign); the volume signal is what bounds those. A client's rows per UTC day above
``volume_per_day`` is a volume finding. Each finding becomes one ``serve_alerts`` row (and an
audit event) per client, kind and server process, and can start the ``model-extraction``
playbook.

Observations are processed on one background thread from a bounded queue (a full queue drops
and counts), so detection never adds to a request's latency.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assay.serving._follower import Service
    from assay.trust.serving_policy import ExtractionPolicy

__all__ = ["ClientHistory", "Detector", "shapiro_w"]

log = logging.getLogger(__name__)
TEST_EVERY = 10  # run the Shapiro-Wilk test every this many new distances


def shapiro_w(values: Any) -> float:
    """Shapiro-Wilk W of ``values`` (at most the last 5000); 1.0 for constant input."""
    import numpy as np
    from scipy.stats import shapiro

    data = np.asarray(values, dtype=np.float64)[-5000:]
    if data.size < 3 or float(np.ptp(data)) == 0.0:
        return 1.0 if data.size < 3 else 0.0
    return float(shapiro(data).statistic)


@dataclass
class ClientHistory:
    """One client's recent queries (a ring buffer of ``window`` rows) and minimum distances."""

    window: int
    buffer: Any = None  # (window, width) float64
    count: int = 0  # rows in the buffer
    next: int = 0  # where the next row goes
    distances: collections.deque = field(default_factory=collections.deque)
    since_test: int = 0

    @property
    def queries(self) -> Any:
        return () if self.buffer is None else self.buffer[: self.count]

    def observe(self, rows: Any) -> None:
        import numpy as np

        for row in rows:
            row = np.asarray(row, dtype=np.float64)
            if self.buffer is None or self.buffer.shape[1] != row.shape[0]:  # (another) width
                self.buffer = np.empty((self.window, row.shape[0]))
                self.count = self.next = 0
                self.distances.clear()
            if self.count:
                past = self.buffer[: self.count]
                d = float(np.sqrt(((past - row) ** 2).sum(axis=1)).min())
                if d == 0.0:  # an exact repeat tells an attacker nothing new: not counted
                    continue
                self.distances.append(d)
                self.since_test += 1
                if len(self.distances) > self.window:
                    self.distances.popleft()
            self.buffer[self.next] = row
            self.next = (self.next + 1) % self.window
            self.count = min(self.count + 1, self.window)

    def finding(self, policy: ExtractionPolicy, *, force: bool = False) -> float | None:
        """W when it is below the threshold (tested every ``TEST_EVERY`` distances)."""
        if len(self.distances) < policy.min_queries or (self.since_test < TEST_EVERY and not force):
            return None
        self.since_test = 0
        w = shapiro_w(self.distances)
        return w if w < policy.threshold else None


class Detector:
    """Per-client histories of one served model; alerts through the service's writer."""

    def __init__(self, service: Service, *, queue_size: int = 10_000) -> None:
        self.service = service
        self.histories: dict[str, ClientHistory] = {}
        self.volume: dict[tuple[str, str], int] = {}
        self.alerted: set[tuple[str, str]] = set()
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._run, name="assay-serve-detect", daemon=True)
        self._thread.start()

    def submit(self, client: str, rows: Any, count: int | None = None) -> None:
        """Queue ``rows`` (numeric, or None when the input is not numeric) of a request of
        ``count`` rows (default ``len(rows)``): every row counts towards the volume signal."""
        count = len(rows) if count is None else count
        try:
            self._queue.put_nowait((client, rows, count))
        except queue.Full:
            self.dropped += 1

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every submitted observation is processed (tests, shutdown)."""
        import time

        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        while True:
            client, rows, count = self._queue.get()
            try:
                self.observe(client, rows, count)
            except Exception:  # noqa: BLE001 - the detector must never die
                log.exception("serving: extraction detector failed")
            finally:
                self._queue.task_done()

    def observe(self, client: str, rows: Any, count: int | None = None) -> None:
        policy = self.service.policy.extraction
        self._observe_volume(client, len(rows) if count is None else count, policy)
        if rows is None:
            return
        history = self.histories.get(client)
        if history is None or history.window != policy.window:
            history = self.histories[client] = ClientHistory(policy.window)
        history.observe(rows)
        w = history.finding(policy)
        if w is not None:
            self.alert(
                client,
                "extraction",
                {
                    "shapiro_w": round(w, 6),
                    "threshold": policy.threshold,
                    "distances": len(history.distances),
                    "queries_seen": len(history.queries),
                },
            )

    def _observe_volume(self, client: str, count: int, policy: ExtractionPolicy) -> None:
        day = datetime.now(timezone.utc).date().isoformat()
        key = (client, day)
        self.volume[key] = self.volume.get(key, 0) + count
        if self.volume[key] > policy.volume_per_day:
            self.alert(
                client,
                "volume",
                {"rows_today": self.volume[key], "volume_per_day": policy.volume_per_day},
                once_key=f"volume:{day}",
            )

    def alert(
        self, client: str, kind: str, detail: dict[str, Any], once_key: str | None = None
    ) -> None:
        key = (client, once_key or kind)
        if key in self.alerted:
            return
        self.alerted.add(key)
        from assay.serving.alerts import queue_alert

        queue_alert(self.service, client, kind, detail)

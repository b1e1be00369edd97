"""The background store writer: query log rows, alerts and audit events, off the request path.

Requests never wait on the store: they put a job (a function of a session, or a query-log row)
on a bounded queue, and one thread commits jobs in batches: query-log rows at most once per
``interval`` (one transaction and one bulk insert each), alerts and audit events at once. When the store is unreachable the jobs stay queued and
are retried (alerts are kept before query rows); when the queue is full the oldest query-log
jobs are dropped and counted, never the alerts or audit events.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from assay.core.errors import AssayError

if TYPE_CHECKING:
    from assay.registry.facade import Registry

__all__ = ["StoreWriter"]

log = logging.getLogger(__name__)

#: A function of a session, or a dict: one ``serve_queries`` row (inserted in bulk).
BATCH = 5000  # query-log rows per transaction

Job = Callable[[Any], None] | dict


class StoreWriter:
    def __init__(self, registry: Registry, *, limit: int = 20_000, interval: float = 0.5) -> None:
        self.registry = registry
        self.limit = limit
        self.interval = interval
        self._log: collections.deque[Job] = collections.deque()
        self._important: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self.dropped = 0
        self._inflight = 0  # jobs taken for the batch being committed
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="assay-serve-writer", daemon=True)

    def start(self) -> StoreWriter:
        self._thread.start()
        return self

    def put(self, job: Job, *, important: bool = False) -> None:
        with self._cond:
            if important:
                self._important.append(job)
            else:
                if len(self._log) >= self.limit:
                    self._log.popleft()
                    self.dropped += 1
                self._log.append(job)
            if important:  # query-log rows wait for the next batch (one commit per interval)
                self._cond.notify()

    @property
    def pending(self) -> int:
        """Jobs not yet committed: queued, or in the batch being committed."""
        with self._cond:
            return len(self._log) + len(self._important) + self._inflight

    def _take(self) -> list[tuple[bool, Job]]:
        with self._cond:
            if not (self._important or self._stop or len(self._log) >= BATCH):
                self._cond.wait(self.interval)
            batch = [(True, self._important.popleft()) for _ in range(len(self._important))]
            batch += [(False, self._log.popleft()) for _ in range(min(len(self._log), BATCH))]
            self._inflight = len(batch)
            return batch

    def _done(self) -> None:
        with self._cond:
            self._inflight = 0

    def _requeue(self, batch: list[tuple[bool, Job]]) -> None:
        with self._cond:
            self._inflight = 0
            for important, job in reversed(batch):
                if important:
                    self._important.appendleft(job)
                elif len(self._log) < self.limit:
                    self._log.appendleft(job)
                else:
                    self.dropped += 1

    def flush_once(self) -> bool:
        """Commit what is queued now in one transaction; False (requeued) when the store fails."""
        batch = self._take()
        if not batch:
            return True
        try:
            with self.registry.store.session() as session:
                rows = [job for _, job in batch if isinstance(job, dict)]
                for _, job in batch:
                    if not isinstance(job, dict):
                        job(session)
                if rows:  # query-log rows: one executemany, not one ORM object each
                    from sqlalchemy import insert

                    from assay.store.models import ServeQuery, utcnow

                    for row in rows:
                        row.setdefault("at", utcnow())
                    session.execute(insert(ServeQuery), rows)
        except (AssayError, OSError) as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.warning("serving: store write failed, %d jobs queued: %s", len(batch), exc)
            self._requeue(batch)
            return False
        except Exception as exc:  # noqa: BLE001 - a database driver's own error: keep serving
            self.failures += 1
            self.last_error = " ".join(str(exc).split())[:300]
            log.warning("serving: store write failed: %s", self.last_error)
            self._requeue(batch)
            return False
        self._done()
        self.last_error = None
        return True

    def _run(self) -> None:
        import time

        while True:
            with self._cond:
                if self._stop and not (self._log or self._important):
                    return
            if not self.flush_once():
                with self._cond:
                    if self._stop:
                        return
                time.sleep(min(5.0, self.interval * 4))

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

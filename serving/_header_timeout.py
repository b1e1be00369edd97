"""A deadline for the request line and headers (slowloris in the header phase).

uvicorn's h11 protocol bounds the size of the headers (``h11_max_incomplete_event_size``) and
the idle time between requests (``timeout_keep_alive``), but not the time a client may take to
send its headers: a client that sends a byte now and then keeps its connection, and enough of
them hold every connection slot. :class:`HeaderTimeoutH11Protocol` is uvicorn's own
``H11Protocol`` with one timer more: armed when a connection opens and after each response,
cancelled once h11 has parsed a complete request head; when it fires the connection is closed.
The body phase is governed by ``request_timeout_s`` in the app (408), as before.

uvicorn builds the protocol as ``http(config=..., server_state=..., app_state=...)``, so
:func:`protocol` hands it a ``functools.partial`` (picklable, for ``--workers``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from assay.serving.server import DEFAULT_HEADER_TIMEOUT_S

__all__ = ["HeaderTimeoutH11Protocol", "protocol"]

log = logging.getLogger(__name__)


class HeaderTimeoutH11Protocol(H11Protocol):
    """``H11Protocol`` that closes a connection whose request head is not complete within
    ``header_timeout`` seconds of the connection opening or the previous response ending."""

    def __init__(self, *args: Any, header_timeout: float = DEFAULT_HEADER_TIMEOUT_S, **kw: Any):
        super().__init__(*args, **kw)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_after: Any = None  # the cycle that existed when the timer was armed

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._waiting_after = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_expired)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _head_parsed(self) -> None:
        if self._header_timer is not None and self.cycle is not self._waiting_after:
            self._disarm_header_timer()  # h11 produced a Request: a new cycle runs

    def _header_expired(self) -> None:
        self._header_timer = None
        if self.transport is not None and not self.transport.is_closing():
            log.info(
                "serving: closed a connection whose request head took over %gs", self.header_timeout
            )
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._head_parsed()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm_header_timer()  # before: a pipelined request may start a cycle in there
        super().on_response_complete()
        self._head_parsed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def protocol(header_timeout: float = DEFAULT_HEADER_TIMEOUT_S) -> Any:
    """The ``http=`` value for ``uvicorn.Config``."""
    return functools.partial(HeaderTimeoutH11Protocol, header_timeout=float(header_timeout))

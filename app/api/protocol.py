"""uvicorn's HTTP protocol with a header deadline: a connection must send a request's complete headers within
HEADER_TIMEOUT_SECONDS of opening (or of the request's first byte on a kept-alive connection), else it is closed.

uvicorn has no such timeout: a client that trickles headers, or opens connections and sends nothing, would hold
them (and their file descriptors) for ever. They never count as requests in progress (MAX_REQUESTS,
app/api/inflight.py). Bodies have their own deadline
(app/api/limits.py); idle kept-alive connections close after uvicorn's keep-alive timeout.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0  # set per server by `with_header_timeout`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.logger.warning(
                "Closed a connection that sent no complete request headers in %gs.", self.header_timeout
            )
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderDeadlineProtocol]:
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": seconds})

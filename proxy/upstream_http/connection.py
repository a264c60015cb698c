"""One keep-alive connection to an upstream, fed through httptools (llhttp), and the idle pool per origin."""

from __future__ import annotations

import asyncio
import socket
import time

import httptools

from proxy.upstream_http.errors import BodyBroken, ClosedBeforeAnswer
from proxy.upstream_http.response import Response
from proxy.upstream_http.wire import Origin

MAX_IDLE_PER_ORIGIN = 256
# Bytes parsed per turn of the event loop: a burst (a whole stream written at once) is parsed a slice at a
# time, so whoever waits for the head or the first bytes runs before the rest is parsed.
FEED_SLICE = 16 * 1024


class Connection(asyncio.Protocol):
    """One keep-alive connection; it feeds the response in progress from httptools' callbacks."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._reason = ""
        self._informational = False
        self._keep_alive = False
        self._paused = False  # the response holds enough unread body: back-pressure
        self._backlog = b""  # received, not parsed yet (see FEED_SLICE)
        self._reading = True
        self._until_close = False
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0

    # -- asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._backlog:  # an earlier burst is still being parsed: this comes after it
            self._backlog += data
            return
        if self._response is None or self._response.done:  # bytes nobody asked for: not to be trusted again
            self._unsolicited()
            return
        if len(data) > FEED_SLICE:
            data, self._backlog = data[:FEED_SLICE], data[FEED_SLICE:]
            self._update_reading()
            self._feed(data)
            asyncio.get_running_loop().call_soon(self._feed_backlog)  # after whoever this slice woke
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._broken("the upstream sent a malformed response")
            self.transport.close()  # type: ignore[union-attr]

    def _feed_backlog(self) -> None:
        data, self._backlog = self._backlog, b""
        if data and not self.lost:
            self.data_received(data)
        self._update_reading()

    def _update_reading(self) -> None:
        reading = not (self._paused or self._backlog)
        if reading != self._reading and not self.lost:
            self._reading = reading
            if reading:
                self.transport.resume_reading()  # type: ignore[union-attr]
            else:
                self.transport.pause_reading()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._backlog:  # what arrived before the end is parsed before the end is
            data, self._backlog = self._backlog, b""
            if self._response is not None and not self._response.done:
                self._feed(data)
        self.lost = True
        response = self._response
        if response is not None and response.has_head and self._until_close and exc is None:
            response._on_end()  # a body delimited by the end of the connection
        else:
            self._broken("the upstream closed the connection")

    def _unsolicited(self) -> None:
        self.lost = True
        self.transport.close()  # type: ignore[union-attr]

    def _broken(self, message: str) -> None:
        response = self._response
        if response is None:
            return
        response._fail(BodyBroken(message) if response.has_head else ClosedBeforeAnswer(message))

    # -- httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None and not self._response.done:
            self._response._raw_headers.append(
                (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
            )

    def on_headers_complete(self) -> None:
        response = self._response
        status = self._parser.get_status_code()
        if response is None or response.done:  # a second answer to one request
            self._unsolicited()
            return
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._informational = True
            response._raw_headers.clear()
            return
        self._keep_alive = self._parser.should_keep_alive()
        response._on_head(status, self._reason)
        framed = "content-length" in response.headers or "transfer-encoding" in response.headers
        self._until_close = not framed and status not in (204, 304)
        if response.method == "HEAD":  # llhttp cannot be told a HEAD answer has no body
            self._keep_alive = False
            response._on_end()

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is not None and not response.done and response._on_body(body) and not self._paused:
            self._paused = True
            self._update_reading()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._keep_alive = self._keep_alive and self._parser.should_keep_alive()
        response = self._response
        if response is not None and not response.done:
            response._on_end()

    # -- used by the pool and the response

    def start(self, response: Response, data: bytes) -> None:
        self._response = response
        self._reason, self._informational, self._until_close = "", False, False
        self.transport.write(data)  # type: ignore[union-attr]

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._update_reading()

    def finish(self, reusable: bool) -> None:
        self._response = None
        self._pool.in_use -= 1
        if reusable and self._keep_alive and not self.lost and not self._backlog:
            self.resume()
            self._pool.put(self)
        else:
            self.lost = True
            self.transport.close()  # type: ignore[union-attr]


class Pool:
    def __init__(self, origin: Origin, keepalive_s: float) -> None:
        self.origin = origin
        self.keepalive_s = keepalive_s
        self.idle: list[Connection] = []
        self.in_use = 0

    def take(self) -> Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.lost and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.lost = True
            conn.transport.close()  # type: ignore[union-attr]
        return None

    def put(self, conn: Connection) -> None:
        if len(self.idle) >= MAX_IDLE_PER_ORIGIN:
            conn.lost = True
            conn.transport.close()  # type: ignore[union-attr]
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.transport.close()  # type: ignore[union-attr]
        self.idle.clear()

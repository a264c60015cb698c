"""A response head, and its body as it arrives: buffered chunks, a waiter, back-pressure on the socket."""

from __future__ import annotations

import asyncio
import collections
import zlib
from typing import TYPE_CHECKING

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.upstream_http.errors import BodyBroken, UpstreamHTTPError

if TYPE_CHECKING:
    from proxy.upstream_http.connection import Connection

HIGH_WATER = 256 * 1024  # buffered body bytes before the upstream socket stops being read


class Response:
    """A response head, and its body as it arrives. `release` or `close` it exactly once it is done with."""

    __slots__ = (
        "_body",
        "_buffered",
        "_chunks",
        "_conn",
        "_decoder",
        "_done",
        "_error",
        "_head",
        "_raw_headers",
        "_timer",
        "_until",
        "_waiter",
        "_watched",
        "content_length",
        "deadline",
        "headers",
        "method",
        "reason",
        "status",
    )

    def __init__(self, conn: Connection, method: str, deadline: float | None) -> None:
        self._conn: Connection | None = conn
        self.method = method
        self.deadline = deadline  # loop time after which reading the body fails (total timeout)
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        self.content_length: int | None = None
        self._raw_headers: list[tuple[str, str]] = []
        self._head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._watched: asyncio.Future[None] | None = None  # the wait in progress (head or body) and its deadline
        self._until: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done = False
        self._error: UpstreamHTTPError | None = None
        self._decoder: zlib._Decompress | None = None
        self._body: bytes | None = None

    # -- reading, for the proxy

    async def head_received(self, until: float | None = None) -> None:
        """Returns once the head is in; raises what prevented it, or `TimeoutError` at loop time `until`."""
        self._watch(self._head, until)
        try:
            await self._head
        finally:
            self._watched = self._until = None

    def read_nowait(self) -> bytes:
        """Whatever body has arrived and not been read yet (b"" if none)."""
        if not self._chunks:
            return b""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._consumed()
        return data

    async def readany(self, until: float | None = None) -> bytes:
        """The next bytes of the body as soon as there are any; b"" at its end.

        Raises `BodyBroken` on a cut (after what arrived before it), `TimeoutError` if nothing came by loop
        time `until`.
        """
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            self._watch(waiter, until)
            try:
                await waiter
            finally:
                self._waiter = self._watched = self._until = None
        return self.read_nowait()

    def _watch(self, future: asyncio.Future[None], until: float | None) -> None:
        """Fail `future` with `TimeoutError` at loop time `until` unless it is settled first.

        Every wait of a response shares one timer that moves on lazily, not a timer per wait: a stream
        of many events costs a float store per event, not a timer each. The waiter clears `_watched`.
        """
        if until is not None and not future.done():
            self._watched, self._until = future, until
            if self._timer is None or self._timer.when() > until:
                self._rearm(asyncio.get_running_loop(), until)

    def _rearm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        waiter, until = self._watched, self._until
        if waiter is None or until is None or waiter.done():
            return  # nobody is waiting: the next wait arms it again
        loop = asyncio.get_running_loop()
        if loop.time() < until:
            self._rearm(loop, until)  # the wait now in progress started after this timer was set
        else:
            waiter.set_exception(TimeoutError())

    async def read(self, until: float | None = None) -> bytes:
        """The whole body by loop time `until`; read once, it is kept, and a second `read` returns it again."""
        if self._body is None:
            chunks = []
            while chunk := await self.readany(until):
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    def release(self) -> None:
        """Done with it: the connection goes back to the pool if the body was read whole, else it is closed."""
        self._stop_timer()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish(reusable=self._done and self._error is None)

    def close(self) -> None:
        self._stop_timer()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish(reusable=False)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- fed by the connection

    @property
    def has_head(self) -> bool:
        return self.status != 0

    @property
    def done(self) -> bool:
        """The body arrived to its end (it may not all have been read yet)."""
        return self._done

    def _consumed(self) -> None:
        self._buffered = 0
        if self._conn is not None:
            self._conn.resume()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_head(self, status: int, reason: str) -> None:
        headers = CIMultiDict(self._raw_headers)
        self.status, self.reason, self.headers = status, reason, CIMultiDictProxy(headers)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and "transfer-encoding" not in headers:
            self.content_length = int(length)
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, from the data's own header
        if not self._head.done():
            self._head.set_result(None)

    def _on_body(self, data: bytes) -> bool:
        """Returns whether reading from the socket should pause."""
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error:
                self._fail(BodyBroken("the upstream body could not be decompressed"))
                return False
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            self._wake()
        return self._buffered > HIGH_WATER

    def _on_end(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._chunks.append(tail)
        self._done = True
        self._wake()

    def _fail(self, error: UpstreamHTTPError) -> None:
        if self._done or self._error is not None:
            return
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: nobody may be waiting any more
        self._wake()

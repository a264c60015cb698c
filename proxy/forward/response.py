"""One upstream answer: its head, and its body read within the bounds of the policy.

aiohttp parses the answer and buffers at most about two reads of it per connection (it
stops reading the socket past that). Decoding gzip and deflate is done here, not by
aiohttp, so that decoded bytes are produced a bounded piece at a time, only as fast as
the caller takes them, and count against the same bounds as everything else: a small
compressed answer cannot inflate into gigabytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
from multidict import CIMultiDictProxy

from proxy.errors import UpstreamLimitExceeded, UpstreamStreamBroken
from proxy.forward.bounds import MIB, ResponseLimits

PIECE = 64 * 1024  # decoded bytes produced per step: the most a decoder holds ahead of the caller
RATIO_FLOOR = 1 * MIB  # the inflation ratio is judged past this many decoded bytes
DECODED = frozenset({"gzip", "x-gzip", "deflate"})


class _Inflater:
    """gzip or deflate (zlib-wrapped or raw, as servers send both), a bounded piece at a time."""

    __slots__ = ("_decoder", "_encoding", "_start")

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._start = b""  # deflate's first bytes, until there are two to tell its two forms apart
        self._decoder: zlib._Decompress | None = (
            zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding != "deflate" else None
        )

    def pieces(self, data: bytes) -> Iterator[bytes]:
        if self._decoder is None:  # deflate: a zlib header (RFC 1950) or raw deflate (what some servers send)
            data = self._start + data
            if len(data) < 2:
                self._start = data
                return
            zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        decoder = self._decoder
        while data:
            out = decoder.decompress(data, PIECE)
            data = decoder.unconsumed_tail
            if decoder.eof and decoder.unused_data and self._encoding != "deflate":
                data = decoder.unused_data  # a further gzip member
                decoder = self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            if out:
                yield out


@contextlib.contextmanager
def reading_body() -> Iterator[None]:
    """A read of the body that times out or fails is a broken stream, whoever reads it."""
    try:
        yield
    except TimeoutError:
        raise UpstreamStreamBroken("the upstream stopped sending data", code="upstream_idle_timeout") from None
    except zlib.error:
        raise UpstreamStreamBroken("the upstream sent a malformed compressed body", code="upstream_bad_body") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamStreamBroken("the upstream connection broke mid-response", code="upstream_stream_broken") from exc


class UpstreamResponse:
    """An answer's head and body; `release` or `close` it once done (the forwarding owner does)."""

    __slots__ = (
        "_inflater",
        "_raw",
        "_timer",
        "_until",
        "_waiting",
        "body",
        "deadline",
        "decoded",
        "headers",
        "limits",
        "received",
        "status",
    )

    def __init__(self, raw: aiohttp.ClientResponse, limits: ResponseLimits, deadline: float) -> None:
        self._raw = raw
        self.limits = limits
        self.deadline = deadline  # loop time after which reading the body fails (the request's total timeout)
        self.status = raw.status
        self.headers: CIMultiDictProxy[str] = raw.headers
        encoding = raw.headers.get("content-encoding", "").strip().lower()
        self._inflater = _Inflater(encoding) if encoding in DECODED else None
        self.received = 0  # bytes as they came, compressed or not
        self.decoded = 0
        self.body: bytes | None = None  # set once read whole
        # Body reads are timed by one loop timer per answer that moves on lazily: a streamed event
        # costs a float store, not a timer of its own; when it fires during a wait, the wait fails.
        self._timer: asyncio.TimerHandle | None = None
        self._until = 0.0
        self._waiting = False

    @property
    def content_length(self) -> int | None:
        """The length the caller gets, when known before reading: not for a body this side decodes."""
        return None if self._inflater is not None else self._raw.content_length

    @property
    def event_stream(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

    @property
    def finished(self) -> bool:
        """The whole body has been read: the connection can go back to the pool."""
        return self._raw.content.at_eof()

    def read_nowait(self) -> bytes:
        """What arrived with the head and is not yet read (b"" if none, or if it still needs decoding)."""
        if self._inflater is not None:
            return b""
        with reading_body():
            data = self._raw.content.read_nowait()
        self._count(data)
        return data

    async def chunks(self, idle_s: float) -> AsyncIterator[bytes]:
        """Body bytes (decoded) as they arrive; a gap past `idle_s`, the deadline, a cut or a bound ends it."""
        content = self._raw.content
        loop = asyncio.get_running_loop()
        with reading_body():
            while True:
                data = content.read_nowait()
                if not data:
                    if content.at_eof():
                        return
                    until = loop.time() + idle_s
                    self._watch(loop, until if until < self.deadline else self.deadline)
                    try:
                        data = await content.readany()
                    finally:
                        self._waiting = False
                    if not data:
                        return
                if self._inflater is None:
                    self._count(data)
                    yield data
                    continue
                self.received += len(data)
                for piece in self._inflater.pieces(data):
                    self._count_decoded(piece)
                    yield piece

    async def read(self, idle_s: float) -> bytes:
        """The whole body, for a stage that reads it whole: past `max_body_bytes` (compressed or decoded), 502."""
        if self.body is not None:
            return self.body
        limit = self.limits.max_body_bytes
        parts: list[bytes] = []
        size = 0
        async for part in self.chunks(idle_s):
            size += len(part)
            if size > limit or self.received > limit:
                raise UpstreamLimitExceeded(
                    f"the upstream's answer is larger than {limit} bytes", code="upstream_body_too_large"
                )
            parts.append(part)
        self.body = b"".join(parts)
        return self.body

    def _watch(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        self._until = until  # never earlier than before: `now + idle_s`, capped by the fixed deadline
        self._waiting = True
        if self._timer is None:
            self._timer = loop.call_at(until, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._waiting:
            return  # the next wait arms it again
        if loop.time() < self._until:
            self._timer = loop.call_at(self._until, self._expire, loop)
        else:
            self._raw.content.set_exception(TimeoutError())

    def _count(self, data: bytes) -> None:
        self.received += len(data)
        self._count_decoded(data)

    def _count_decoded(self, piece: bytes) -> None:
        self.decoded += len(piece)
        limits = self.limits
        if self.decoded > limits.max_response_bytes:
            raise UpstreamLimitExceeded(
                f"the upstream's answer is larger than {limits.max_response_bytes} bytes",
                code="upstream_response_too_large",
            )
        if self.decoded > RATIO_FLOOR and self.decoded > limits.max_inflation_ratio * self.received:
            raise UpstreamLimitExceeded(
                "the upstream's compressed answer inflates past the allowed ratio", code="upstream_inflation_too_high"
            )

    async def drain(self, max_bytes: int, within_s: float) -> None:
        """Read what is left of a body nobody needs, so the connection can be reused; then release it."""
        content = self._raw.content
        try:
            async with asyncio.timeout(within_s):
                left = max_bytes
                while left > 0 and (data := await content.readany()):
                    left -= len(data)
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        finally:
            self.release()

    def abort(self, error: BaseException) -> None:
        """Ends the body where it is: a read in progress or the next one raises `error`."""
        self._raw.content.set_exception(error)

    def release(self) -> None:
        """Done with: the connection goes back to the pool if the body was read to its end, else it is closed."""
        self._stop_timer()
        self._raw.release()

    def close(self) -> None:
        self._stop_timer()
        self._raw.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

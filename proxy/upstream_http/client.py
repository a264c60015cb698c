"""The client: a pool per origin, TLS, one write per request, the response once its head is in."""

from __future__ import annotations

import asyncio
import ssl

from multidict import CIMultiDict

from proxy.upstream_http.connection import Connection, Pool
from proxy.upstream_http.errors import ConnectFailed, ConnectTimeout
from proxy.upstream_http.response import Response
from proxy.upstream_http.wire import Origin, request_head, split_url

ONE_WRITE = 64 * 1024  # a body up to this size goes out in the same write as the head


class HTTPClient:
    """One per process: its pools are what make forwarding cheap."""

    def __init__(self, keepalive_s: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self._keepalive_s = keepalive_s
        self._ssl_context = ssl_context
        self._pools: dict[Origin, Pool] = {}

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def _connect(self, pool: Pool, connect_s: float, first_byte_at: float | None) -> Connection:
        origin = pool.origin
        loop = asyncio.get_running_loop()
        budget = connect_s if first_byte_at is None else min(connect_s, first_byte_at - loop.time())
        try:
            async with asyncio.timeout(budget):
                _, conn = await loop.create_connection(
                    lambda: Connection(pool),
                    origin.host,
                    origin.port,
                    ssl=self._ssl() if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                )
        except TimeoutError:
            if budget < connect_s:  # the answer's deadline came first
                raise TimeoutError from None
            raise ConnectTimeout(f"connecting to {origin.host_header} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"could not connect to {origin.host_header}") from exc
        return conn

    async def request(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        body: bytes = b"",
        *,
        connect_s: float = 30.0,
        first_byte_at: float | None = None,
        deadline: float | None = None,
    ) -> Response:
        """Send one request and return once the response head is in; the body is read from the `Response`.

        `first_byte_at` (loop time): `TimeoutError` if no head by then, connecting included. `deadline`
        (loop time): kept on the response, for its readers.
        """
        origin, target = split_url(url)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = Pool(origin, self._keepalive_s)
        head = request_head(method, target, origin, headers, body)
        conn = pool.take() or await self._connect(pool, connect_s, first_byte_at)
        pool.in_use += 1
        response = Response(conn, method, deadline)
        conn.start(response, head + body if len(body) <= ONE_WRITE else head)
        if len(body) > ONE_WRITE:  # not copied into one buffer with the head
            conn.transport.write(body)  # type: ignore[union-attr]
        try:
            await response.head_received(first_byte_at)
        except BaseException:
            response.close()
            raise
        return response

    def connections(self) -> tuple[int, int]:
        """(held by a response, idle in a pool), over every origin."""
        return sum(p.in_use for p in self._pools.values()), sum(len(p.idle) for p in self._pools.values())

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

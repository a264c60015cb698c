"""aiohttp's connection pool with one guard more: a pooled connection that hears anything is closed.

Between two requests an idle keep-alive connection has nothing to say. Bytes that arrive then
(a late second answer, a forged head) would be read as the answer to the next request on
that connection, which may be another caller's on another route: aiohttp would parse them
and hand them over. Here such a connection is closed on the spot and never handed out.
"""

from __future__ import annotations

import functools
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler


class _GuardedHandler(ResponseHandler):
    __slots__ = ("pooled",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pooled = False

    def data_received(self, data: bytes) -> None:
        if data and self.pooled and self.transport is not None:  # nobody asked: never the next answer
            self.transport.close()
            return
        super().data_received(data)


class GuardedConnector(aiohttp.TCPConnector):
    """`TCPConnector` whose connections refuse to speak while they wait in the pool."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._factory = functools.partial(_GuardedHandler, loop=self._loop)

    def _release(self, key: Any, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        if isinstance(protocol, _GuardedHandler):
            protocol.pooled = True
        super()._release(key, protocol, should_close=should_close)

    async def _get(self, key: Any, traces: list[Any]) -> Any:
        connection = await super()._get(key, traces)
        if connection is not None and isinstance(connection.protocol, _GuardedHandler):
            connection.protocol.pooled = False
        return connection

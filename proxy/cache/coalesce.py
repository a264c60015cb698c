"""Concurrent identical misses: the first goes upstream, the others wait for what it stores.

Per process (replicas each send their own first request). A waiter waits at most its
bound; if the first request ends without an answer to store (an error, a stream cut
short, an answer too large), each waiter goes upstream itself.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Keys with a request in flight upstream, each with the future its waiters await."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T | None]] = {}

    def lead(self, key: str) -> asyncio.Future[T | None] | None:
        """Become the request that goes upstream for `key` (a future to settle), or None: one already is."""
        if key in self._flights:
            return None
        future: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        return future

    async def wait(self, key: str, timeout_s: float) -> T | None:
        """The leader's answer for `key`; None when it had none, or after `timeout_s`."""
        future = self._flights.get(key)
        if future is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            return None

    def settle(self, key: str, future: asyncio.Future[T | None], value: T | None) -> None:
        """The leader is done: waiters get `value` (None sends them upstream)."""
        if self._flights.get(key) is future:
            del self._flights[key]
        if not future.done():
            future.set_result(value)

    def __len__(self) -> int:
        return len(self._flights)

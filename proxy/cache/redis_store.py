"""Entries in Redis, shared by every replica: one GET or SET per call, each bounded by the state timeout.

The connection settings are the policy's `state:` (URL, `redis_timeout_ms`, `key_prefix`);
the client is redis-py's, set up as the limits' store sets it up (proxy/state/redis.py).
Redis expires entries itself (`PX`); bounds on the whole are Redis's own (`maxmemory` with
an LRU policy), since one process cannot see what its peers stored. A failed call raises
`CacheUnavailable`, and the cache behaves as a miss: a Redis fault never fails a request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import ClassVar

from proxy.cache.store import CacheStore, CacheUnavailable
from proxy.state.redis import connect

NAMESPACE = "cache:"


class RedisCacheStore(CacheStore):
    backend: ClassVar[str] = "redis"

    def __init__(self, url: str, timeout_s: float, key_prefix: str, clock: Callable[[], float] = time.time):
        self._client, self._errors = connect(url, timeout_s)
        self._timeout_s = timeout_s
        self._prefix = f"{key_prefix}{NAMESPACE}"
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        try:
            value = await asyncio.wait_for(self._client.get(self._prefix + key), self._timeout_s * 2)
        except self._errors as exc:
            raise CacheUnavailable(type(exc).__name__) from None
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, expires_at: float) -> None:
        ttl_ms = math.ceil((expires_at - self._clock()) * 1000)
        if ttl_ms <= 0:
            return
        try:
            await asyncio.wait_for(self._client.set(self._prefix + key, value, px=ttl_ms), self._timeout_s * 2)
        except self._errors as exc:
            raise CacheUnavailable(type(exc).__name__) from None

    async def close(self) -> None:
        await self._client.aclose()

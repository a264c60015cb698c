"""The process's cache stores, kept across policy reloads (a reload must not empty the cache).

A store is kept in the process's `KeptRegistry` (proxy/kept.py), found by the settings that
shape it (backend and its bounds or connection), so routes and reloads with the same settings
share one. At most `MAX_STORES` are kept; the least recently asked-for goes first. The clock is
the registry's, so tests can move time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from proxy.cache.coalesce import Coalescer
from proxy.cache.store import CacheStore, MemoryCacheStore
from proxy.kept import KeptRegistry

MAX_STORES = 8
KIND = "cache store"


class CacheRegistry:
    def __init__(self, kept: KeptRegistry | None = None, clock: Callable[[], float] = time.time) -> None:
        self.kept = kept if kept is not None else KeptRegistry()
        self.clock = clock
        self.coalescer: Coalescer[Any] = Coalescer()

    def now(self) -> float:
        return self.clock()

    def memory(self, max_entries: int, max_bytes: int) -> CacheStore:
        key = ("memory", max_entries, max_bytes)
        return self.kept.get(KIND, key, lambda: MemoryCacheStore(max_entries, max_bytes, self.now), MAX_STORES)

    def redis(self, url: str, timeout_s: float, key_prefix: str) -> CacheStore:
        from proxy.cache.redis_store import RedisCacheStore

        key = ("redis", url, timeout_s, key_prefix)
        return self.kept.get(KIND, key, lambda: RedisCacheStore(url, timeout_s, key_prefix, self.now), MAX_STORES)

    def totals(self) -> tuple[int, int]:
        """Entries and bytes held in this process's memory."""
        stores: list[CacheStore] = self.kept.values(KIND)
        return sum(store.entries for store in stores), sum(store.bytes for store in stores)

    async def close(self) -> None:
        """Closes every object the process kept across reloads (the Redis stores hold connections)."""
        await self.kept.close()

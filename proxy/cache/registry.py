"""The process's cache stores, kept across policy reloads (a reload must not empty the cache).

A store is found by the settings that shape it (backend and its bounds or connection), so
routes and reloads with the same settings share one. At most `MAX_STORES` are kept; the
least recently asked-for goes first. The clock is the registry's, so tests can move time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from proxy.cache.coalesce import Coalescer
from proxy.cache.store import CacheStore, MemoryCacheStore

MAX_STORES = 8


class CacheRegistry:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._stores: OrderedDict[tuple[Any, ...], CacheStore] = OrderedDict()
        self.coalescer: Coalescer[Any] = Coalescer()

    def now(self) -> float:
        return self.clock()

    def memory(self, max_entries: int, max_bytes: int) -> CacheStore:
        return self._get(("memory", max_entries, max_bytes), lambda: MemoryCacheStore(max_entries, max_bytes, self.now))

    def redis(self, url: str, timeout_s: float, key_prefix: str) -> CacheStore:
        from proxy.cache.redis_store import RedisCacheStore

        key = ("redis", url, timeout_s, key_prefix)
        return self._get(key, lambda: RedisCacheStore(url, timeout_s, key_prefix, self.now))

    def _get(self, key: tuple[Any, ...], make: Callable[[], CacheStore]) -> CacheStore:
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = make()
            while len(self._stores) > MAX_STORES:
                self._stores.popitem(last=False)
        self._stores.move_to_end(key)
        return store

    def totals(self) -> tuple[int, int]:
        """Entries and bytes held in this process's memory."""
        stores = list(self._stores.values())
        return sum(store.entries for store in stores), sum(store.bytes for store in stores)

    async def close(self) -> None:
        for store in list(self._stores.values()):
            await store.close()
        self._stores.clear()

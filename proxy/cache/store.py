"""Where entries live: the interface, and the in-process backend (cachetools, bounded by count and bytes)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from cachetools import TLRUCache

from proxy.own_size import own_size

ENTRY_OVERHEAD = 500
"""Bytes counted per entry on top of its value: its key, the tuple, and cachetools' bookkeeping (three
dict slots, an item and a heap slot). Measured: 100,000 entries of 10-byte values take 483 B each."""


class CacheUnavailable(Exception):
    """The backend did not answer in time; the request goes on as a miss (or unstored)."""


class CacheStore(ABC):
    """Encoded entries by key, each with its own expiry. Calls raise `CacheUnavailable`, nothing else."""

    backend: ClassVar[str]

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def put(self, key: str, value: bytes, expires_at: float) -> None:
        """`expires_at` is epoch seconds by the store's clock."""

    async def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections (shutdown)."""

    @property
    def entries(self) -> int:
        """Entries held by this process (0 for a shared backend, which this process does not hold)."""
        return 0

    @property
    def bytes(self) -> int:
        return 0


def _expiry(key: str, value: tuple[bytes, float], now: float) -> float:
    return value[1]


def _size(value: tuple[bytes, float]) -> int:
    return len(value[0]) + ENTRY_OVERHEAD


class MemoryCacheStore(CacheStore):
    """Least recently used first past `max_entries` or `max_bytes`; expired entries are never returned.

    No await inside a call, so each is atomic on the event loop.
    """

    backend: ClassVar[str] = "memory"

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.time):
        self.max_entries = max_entries
        self._cache: TLRUCache[str, tuple[bytes, float]] = TLRUCache(
            maxsize=max_bytes, ttu=_expiry, timer=clock, getsizeof=_size
        )

    async def get(self, key: str) -> bytes | None:
        found = self._cache.get(key)
        return None if found is None else found[0]

    async def put(self, key: str, value: bytes, expires_at: float) -> None:
        item = (own_size(value), expires_at)  # orjson's buffer would be ten times a small entry
        if _size(item) > self._cache.maxsize:
            return
        self._cache.pop(key, None)
        self._cache.expire()
        while len(self._cache) >= self.max_entries:
            self._cache.popitem()
        self._cache[key] = item

    @property
    def entries(self) -> int:
        return len(self._cache)

    @property
    def bytes(self) -> int:
        return int(self._cache.currsize)

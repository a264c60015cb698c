"""Token counts of the messages seen lately, so an agent's history is counted once, not on every call.

An agent resends its whole conversation with every request, one or two messages longer each
time; counting 200 messages with the tokenizer takes milliseconds, hashing them a tenth of
one. A message's count (and that of a system prompt given apart with the tools) is kept
under a 128-bit hash of its JSON, its adapter and its encoding, in one bounded LRU for the
process (`ENTRIES`, about 3 MB when full), shared by the threads that count large bodies.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import orjson
from cachetools import LRUCache

from proxy.accounting.tokens import count_fixed, count_message, encoding_name
from proxy.protocols.base import Protocol

ENTRIES = 20_000


class MessageCounts:
    def __init__(self, entries: int = ENTRIES):
        self._cache: LRUCache[bytes, int] = LRUCache(maxsize=entries)
        self._lock = threading.Lock()

    def count(self, message: Mapping[str, Any], model: str | None, protocol: Protocol) -> int:
        """`count_message`, from the cache when this message was counted before for the same encoding."""
        return self._cached(message, "message", model, protocol, partial(count_message, message, model, protocol))

    def fixed(self, model: str | None, system: Any, tools: Any, protocol: Protocol) -> int:
        """`count_fixed`: the system prompt given apart and the tools are resent with every call too."""
        count = partial(count_fixed, model, system, tools, protocol)
        return self._cached([system, tools], "fixed", model, protocol, count)

    def _cached(self, value: Any, kind: str, model: str | None, protocol: Protocol, count: Callable[[], int]) -> int:
        digest = hashlib.blake2b(orjson.dumps(value), digest_size=16)
        digest.update(f"\0{kind}\0{protocol.name}\0{encoding_name(model)}".encode())
        key = digest.digest()
        with self._lock:
            found = self._cache.get(key)
        if found is not None:
            return found
        tokens = count()
        with self._lock:
            self._cache[key] = tokens
        return tokens

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)


MESSAGE_COUNTS = MessageCounts()

"""The memory store's bounds and expiry, entries that do not decode, keys and scopes, the coalescer."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from proxy.cache.coalesce import Coalescer
from proxy.cache.entry import Entry
from proxy.cache.keys import exact_key, partition, scope_id
from proxy.cache.store import ENTRY_OVERHEAD, MemoryCacheStore
from proxy.exchange import Caller


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro):
    return asyncio.run(coro)


def test_entries_expire_at_their_own_time():
    clock = Clock()
    store = MemoryCacheStore(10, 1 << 20, clock)
    run(store.put("a", b"1", 1010))
    run(store.put("b", b"2", 1100))
    clock.now = 1010
    assert run(store.get("a")) is None and run(store.get("b")) == b"2"


def test_an_entry_is_kept_at_its_own_size_not_in_the_encoder_s_buffer():
    async def fill(store: MemoryCacheStore, count: int) -> None:
        for i in range(count):  # each encoded entry is about 135 bytes, in a buffer of 4 KiB from orjson 3.12 on
            raw = Entry({"choices": [{"message": {"content": f"answer {i}"}}]}, "m", {"output": 3}, "a", 4e9).encode()
            await store.put(f"key-{i}", raw, 4e9)

    store = MemoryCacheStore(10_000, 1 << 30)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run(fill(store, 2000))
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / 2000
    finally:
        tracemalloc.stop()
    assert store.entries == 2000
    assert per_entry < 1500  # the value, its key and the store's bookkeeping: about 500 bytes (4,400 uncopied)


def test_the_count_bound_drops_the_least_recently_used():
    store = MemoryCacheStore(2, 1 << 20, Clock())
    run(store.put("a", b"1", 2000))
    run(store.put("b", b"2", 2000))
    run(store.get("a"))
    run(store.put("c", b"3", 2000))
    assert [run(store.get(k)) for k in "abc"] == [b"1", None, b"3"]
    assert store.entries == 2


def test_the_byte_bound_holds_and_an_oversized_entry_is_refused():
    size = 1000
    store = MemoryCacheStore(100, 3 * (size + ENTRY_OVERHEAD), Clock())
    for key in "abcd":
        run(store.put(key, b"x" * size, 2000))
    assert store.bytes <= 3 * (size + ENTRY_OVERHEAD) and run(store.get("a")) is None and store.entries == 3
    run(store.put("huge", b"x" * 10 * size, 2000))
    assert run(store.get("huge")) is None and store.entries == 3


def test_an_entry_round_trips_and_garbage_is_a_miss():
    entry = Entry({"id": "x"}, "m", {"input_tokens": 3}, "caller:a", 5.0)
    assert Entry.decode(entry.encode()) == entry
    for raw in (b"", b"not json", b"[]", b'{"v": 99, "body": {}}', b'{"v": 1, "body": {}, "scope": 1}'):
        assert Entry.decode(raw) is None


def test_scopes_and_keys():
    a, b = Caller("a", "k1", profile="team1"), Caller("b", "k2", profile="team1")
    assert scope_id("caller", a) != scope_id("caller", b)
    assert scope_id("team", a) == scope_id("team", b)
    assert scope_id("caller", None) is None and scope_id("global", None) == "global"
    fields = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    same = {"messages": [{"content": "q", "role": "user"}], "model": "m"}  # key order does not matter
    assert exact_key("s", "r", "/p", fields) == exact_key("s", "r", "/p", same)
    assert exact_key("s", "r", "/p", fields) != exact_key("s", "r", "/other", fields)
    assert exact_key("s", "r", "/p", fields) != partition("s", "r", "/p", fields)


def test_coalescer_waiters_get_the_leaders_value_or_none():
    async def scenario() -> None:
        coalescer: Coalescer[str] = Coalescer()
        flight = coalescer.lead("k")
        assert flight is not None and coalescer.lead("k") is None
        waiters = [asyncio.create_task(coalescer.wait("k", 5)) for _ in range(3)]
        await asyncio.sleep(0)
        coalescer.settle("k", flight, "answer")
        assert await asyncio.gather(*waiters) == ["answer"] * 3
        assert len(coalescer) == 0 and await coalescer.wait("k", 5) is None
        flight = coalescer.lead("k")
        assert flight is not None
        assert await coalescer.wait("k", 0.01) is None  # bounded: the leader is still going

    run(scenario())


@pytest.mark.parametrize("value", [None])
def test_a_failed_leader_releases_its_waiters(value):
    async def scenario() -> None:
        coalescer: Coalescer[str] = Coalescer()
        flight = coalescer.lead("k")
        waiter = asyncio.create_task(coalescer.wait("k", 5))
        await asyncio.sleep(0)
        coalescer.settle("k", flight, value)
        assert await waiter is None

    run(scenario())

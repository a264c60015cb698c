"""The registry of what a policy reload keeps: found by kind and settings, bounded per kind, closed at shutdown."""

from __future__ import annotations

import logging

from proxy.cache.registry import MAX_STORES, CacheRegistry
from proxy.kept import KeptRegistry


class Closing:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def test_the_same_settings_find_the_same_object_and_other_settings_a_fresh_one(caplog):
    kept = KeptRegistry()
    caplog.set_level(logging.INFO, logger="agent_proxy.policy")
    first = kept.get("tool schemas", (1024, 64, 3600.0), dict)
    assert kept.get("tool schemas", (1024, 64, 3600.0), dict) is first
    assert not caplog.records  # the first of its kind: nothing changed
    other = kept.get("tool schemas", (512, 64, 3600.0), dict)
    assert other is not first
    [record] = caplog.records
    assert record.levelno == logging.INFO and record.fields == {"kind": "tool schemas", "kept": 1}  # type: ignore[attr-defined]
    assert kept.get("tool labels", (1024, 64, 3600.0), list) == []  # kinds never share an object


def test_each_kind_keeps_at_most_its_limit_least_recently_asked_for_first():
    kept = KeptRegistry()
    objects = [kept.get("a", n, object, limit=3) for n in range(3)]
    kept.get("a", 0, object, limit=3)  # asked for again: now the most recent
    kept.get("a", 3, object, limit=3)  # past the limit: 1 goes
    assert kept.get("a", 0, object, limit=3) is objects[0] and kept.get("a", 2, object, limit=3) is objects[2]
    assert kept.get("a", 1, object, limit=3) is not objects[1]
    assert len(kept.values("a")) == 3
    b = [kept.get("b", n, object, limit=1) for n in range(2)]
    assert kept.values("b") == [b[1]] and len(kept.values("a")) == 3  # one kind's bound does not evict another's


async def test_close_closes_what_holds_a_connection_and_forgets_everything():
    kept = KeptRegistry()
    closing = kept.get("cache store", "redis", Closing)
    kept.get("tool schemas", 1, dict)
    await kept.close()
    assert closing.closed and kept.values("cache store") == [] and kept.values("tool schemas") == []


def test_cache_stores_live_in_the_shared_registry_under_their_own_bound():
    kept = KeptRegistry()
    caches = CacheRegistry(kept)
    first = caches.memory(10, 1000)
    for n in range(MAX_STORES * 2):
        kept.get("tool schemas", n, dict)  # another kind's churn does not push the store out
    assert caches.memory(10, 1000) is first
    stores = [caches.memory(10, 1000 + n) for n in range(1, MAX_STORES)]
    assert caches.memory(10, 1000) is first and len(kept.values("cache store")) == MAX_STORES
    caches.memory(10, 5000)  # one more: the least recently asked-for goes
    assert stores[0] not in kept.values("cache store")

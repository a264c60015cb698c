"""Settlements that meet a Redis outage are kept and applied once after it; leases live while held.

Against real redis-server processes of the tests' own: frozen with SIGSTOP (a call's script
then waits in Redis' socket and runs when it resumes, after the client gave up on the reply)
or killed (connections refused).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import pytest

from proxy.limits.limiter import Limit, Limiter
from proxy.metrics import Metrics
from proxy.state import Once, Quota, QuotaDelta, Rate, RateDelta, Release, Slot, Undo
from proxy.state.redis import RedisStore

DAY = 86_400.0


async def until(condition, within: float = 5.0) -> float:
    """Poll `condition()` (or an awaitable it returns) until it holds; the seconds it took."""
    start = time.monotonic()
    for _ in range(int(within / 0.01)):
        held = condition()
        if asyncio.iscoroutine(held):
            held = await held
        if held:
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def metric(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"backend": "redis"}) or 0.0


@pytest.fixture
def key() -> str:
    return "settle:" + uuid.uuid4().hex


async def used(store: RedisStore, key: str) -> float:
    (total,) = await store.adjust([QuotaDelta(key, 0, time.time() + DAY)], time.time())
    return total


async def test_a_correction_made_during_a_stall_is_applied_once_after_it(own_redis, key):
    metrics = Metrics()
    store = RedisStore(own_redis.url, timeout_s=0.2, metrics=metrics)
    try:
        expires = time.time() + DAY
        assert (await store.acquire([Quota(key, 100, 10, expires)], time.time()))[0].allowed
        own_redis.pause()
        try:  # sent, then no reply: Redis may run it when it resumes, and the retry must not run it again
            assert await store.settle([QuotaDelta(key, -3, expires)], time.time(), key + ":once") is None
            assert store.upkeep.pending == 1
            assert metric(metrics, "agent_proxy_state_settlements_deferred_total") == 1
            assert metric(metrics, "agent_proxy_state_settlements_pending") == 1
        finally:
            own_redis.resume()
        await until(lambda: store.upkeep.pending == 0)
        assert await used(store, key) == pytest.approx(7)  # once: 10 - 3, not 10 - 6
        assert metric(metrics, "agent_proxy_state_settlements_pending") == 0
    finally:
        await store.close()


async def test_an_attempt_applied_whose_reply_was_lost_is_not_applied_again(redis_server, key):
    store = RedisStore(redis_server.url, timeout_s=2.0)
    try:
        expires = time.time() + DAY
        call = [Once(key + ":once", 900), QuotaDelta(key, 5, expires), RateDelta(key + ":tpm", 60, 60, 30)]
        first = await store.adjust(call, time.time())  # applied; as far as the caller knows, lost
        again = await store.adjust(call, time.time())  # the retry of the same settlement
        assert first[1] == pytest.approx(5) and math.isnan(again[1]) and math.isnan(again[2])
        assert await used(store, key) == pytest.approx(5)
        (remaining,) = await store.adjust([RateDelta(key + ":tpm", 60, 60, 0)], time.time())
        assert remaining == 30  # charged 30 of 60 once
        other = await store.adjust([Once(key + ":other", 900), QuotaDelta(key, 1, expires)], time.time())
        assert other[1] == pytest.approx(6)  # another settlement's marker is its own
    finally:
        await store.close()


async def test_slots_released_during_a_stall_are_back_within_a_second_of_its_end(own_redis, key):
    store = RedisStore(own_redis.url, timeout_s=0.2)
    try:
        slots = [Slot(key, 3, f"lease-{i}", 60) for i in range(3)]
        for slot in slots:
            assert (await store.acquire([slot], time.time()))[0].allowed
        own_redis.pause()
        try:
            for slot in slots:
                assert await store.settle([Release(key, slot.lease)], time.time(), "unused") is None
            assert store.upkeep.pending == 3
        finally:
            own_redis.resume()
        took = await until(lambda: store.upkeep.pending == 0, within=2.0)
        assert took < 2.0
        verdicts = [await store.acquire([Slot(key, 3, f"new-{i}", 60)], time.time()) for i in range(4)]
        assert [v[0].allowed for v in verdicts] == [True, True, True, False]  # all three back, none twice
    finally:
        await store.close()


async def test_kept_settlements_are_bounded_the_oldest_dropped_and_counted(own_redis, key):
    metrics = Metrics()
    store = RedisStore(own_redis.url, timeout_s=0.2, metrics=metrics, max_pending=3)
    try:
        expires = time.time() + DAY
        own_redis.kill()  # refused at once
        for i in range(5):
            assert await store.settle([QuotaDelta(key, i + 1, expires)], time.time(), f"{key}:{i}") is None
        assert store.upkeep.pending == 3
        assert metric(metrics, "agent_proxy_state_settlements_dropped_total") == 2
        own_redis.start()
        await until(lambda: store.upkeep.pending == 0, within=5.0)
        assert await used(store, key) == pytest.approx(3 + 4 + 5)  # the three newest
    finally:
        await store.close()


async def test_a_held_lease_is_renewed_and_one_let_go_lapses(own_redis, key):
    metrics = Metrics()
    store = RedisStore(own_redis.url, timeout_s=0.5, metrics=metrics, lease_s=0.6)
    try:
        kept, dropped = Slot(key, 2, "kept", 0.6), Slot(key, 2, "dropped", 0.6)
        for slot in (kept, dropped):
            assert (await store.acquire([slot], time.time()))[0].allowed
        store.hold(kept)
        store.hold(dropped)
        store.let_go(dropped.lease)  # as a response that ended and whose release was lost
        start = time.monotonic()

        async def admitted(lease: str) -> bool:  # a long lease of its own: only the held one may lapse
            return (await store.acquire([Slot(key, 2, lease, 60)], time.time()))[0].allowed

        await until(lambda: admitted("late"))  # the slot let go comes back once its lease lapses
        assert time.monotonic() - start >= 0.5
        while time.monotonic() - start < 3 * 0.6:  # the held one stays held through three leases
            assert not await admitted("more")
            await asyncio.sleep(0.05)
        assert metric(metrics, "agent_proxy_state_leases_lapsed_total") == 0
        assert store.upkeep.held == 1
    finally:
        await store.close()


async def test_an_undo_reaching_redis_first_keeps_the_admission_out_for_good(redis_server, key):
    store = RedisStore(redis_server.url, timeout_s=2.0)
    try:
        expires = time.time() + DAY
        checks = [Rate(key + ":rpm", 10, 60, 1), Quota(key + ":usd", 1.0, 0.25, expires)]
        marker = key + ":once"
        # Undo before the admission (it was still on its way to Redis when the client gave up): nothing is
        # charged, and the admission, when it arrives, is not applied.
        await store.adjust([Undo(marker, 300), RateDelta(key + ":rpm", 10, 60, -1)], time.time())
        late = await store.acquire(checks, time.time(), marker)
        assert not all(verdict.allowed for verdict in late)
        assert await used(store, key + ":usd") == 0
        # The other order: admitted, then undone, exactly once however often the undo is retried.
        other = key + ":twice"
        assert all(v.allowed for v in await store.acquire(checks, time.time(), other))
        assert await used(store, key + ":usd") == pytest.approx(0.25)
        undo = [Undo(other, 300), RateDelta(key + ":rpm", 10, 60, -1), QuotaDelta(key + ":usd", -0.25, expires)]
        for _ in range(2):
            await store.adjust(undo, time.time())
        assert await used(store, key + ":usd") == 0
        (remaining,) = await store.adjust([RateDelta(key + ":rpm", 10, 60, 0)], time.time())
        assert remaining == 10
    finally:
        await store.close()


async def test_an_admission_lost_in_a_stall_is_undone_whichever_way_it_went(own_redis, key):
    """The call reached the frozen Redis, the client gave up (fail_open); after the stall the admission
    may run late or not at all: either way nothing stays charged for it."""
    store = RedisStore(own_redis.url, timeout_s=0.2)
    limiter = Limiter(lambda: store, fail_closed=False)
    try:
        expires = time.time() + DAY
        rpm, usd = Rate(key + ":rpm", 10, 60, 1), Quota(key + ":usd", 1.0, 0.25, expires)
        limits = [Limit(rpm, "requests", ""), Limit(usd, "budget_day", "")]
        assert (await limiter.admit(limits, once_key=key + ":first")).admitted  # loads the script
        own_redis.pause()
        try:
            assert (await limiter.admit(limits, once_key=key + ":lost")).how == "fail_open"
            assert store.upkeep.pending == 1  # the undo, waiting for Redis
        finally:
            own_redis.resume()
        await until(lambda: store.upkeep.pending == 0)
        assert await used(store, key + ":usd") == pytest.approx(0.25)  # the first admission only
        (remaining,) = await store.adjust([RateDelta(rpm.key, 10, 60, 0)], time.time())
        assert remaining == 9
    finally:
        await store.close()


async def test_what_is_pending_at_shutdown_gets_a_last_attempt(own_redis, key):
    store = RedisStore(own_redis.url, timeout_s=0.2)
    expires = time.time() + DAY
    own_redis.kill()
    for i in range(600):  # more than one retry pass carries
        assert await store.settle([QuotaDelta(key, 1, expires)], time.time(), f"{key}:{i}") is None
    own_redis.start()
    await store.close()  # before the backoff's own retry: close makes it
    fresh = RedisStore(own_redis.url, timeout_s=2.0)
    try:
        assert await used(fresh, key) == pytest.approx(600)
    finally:
        await fresh.close()

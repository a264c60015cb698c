"""The limiter arithmetic (bursts, refill, reconciliation, slots, quotas), on the memory and the Redis store alike.

Time is injected: every call gets `now` from a fake clock that the test moves, never a sleep.
The Redis cases run against a real redis-server (skipped with a reason when it is not installed).
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.errors import ServiceUnavailable
from proxy.limits.limiter import Limit, Limiter
from proxy.metrics import Metrics
from proxy.rounding import round_to
from proxy.state import MemoryStore, Quota, QuotaDelta, Rate, RateDelta, Release, Slot, Store
from proxy.state.arith import EPS
from proxy.state.redis import RedisStore
from tests.fixtures.redis_server import REDIS_SERVER
from tests.fixtures.servers import free_port


class Clock:
    def __init__(self) -> None:
        self.now = float(math.floor(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    if request.param == "memory":
        yield MemoryStore()
        return
    server = request.getfixturevalue("redis_server")
    redis_store = RedisStore(server.url, timeout_s=2.0)
    yield redis_store
    await redis_store.close()


@pytest.fixture
def key() -> str:
    return "test:" + uuid.uuid4().hex


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def take(store: Store, check, now: float):
    (verdict,) = await store.acquire([check], now)
    return verdict


async def test_a_burst_up_to_the_limit_then_a_smooth_refill(store, key, clock):
    rate = Rate(key, limit=10, period_s=60, cost=1)  # one every 6 s, ten at once
    remaining = [(await take(store, rate, clock.now)).remaining for _ in range(10)]
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    refused = await take(store, rate, clock.now)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(6.0)
    assert refused.reset_s == pytest.approx(60.0)

    clock.advance(5.9)
    assert not (await take(store, rate, clock.now)).allowed  # no fixed window: capacity comes back one at a time
    clock.advance(0.1)
    assert (await take(store, rate, clock.now)).allowed
    assert not (await take(store, rate, clock.now)).allowed

    clock.advance(60)  # fully refilled, never more than the limit
    assert [(await take(store, rate, clock.now)).allowed for _ in range(11)] == [True] * 10 + [False]


async def test_tokens_are_admitted_on_an_estimate_and_reconciled(store, key, clock):
    def tokens(cost: float) -> Rate:
        return Rate(key, limit=1000, period_s=60, cost=cost)

    first = await take(store, tokens(600), clock.now)
    assert first.allowed and first.remaining == 400
    second = await take(store, tokens(600), clock.now)
    assert not second.allowed and second.retry_after_s == pytest.approx(200 * 0.06)

    # The first request really used 100 tokens: 500 come back at once.
    (remaining,) = await store.adjust([RateDelta(key, 1000, 60, 100 - 600)], clock.now)
    assert remaining == 900
    assert (await take(store, tokens(600), clock.now)).allowed

    # It used 2000 more than estimated: the caller runs into debt and waits it off.
    (remaining,) = await store.adjust([RateDelta(key, 1000, 60, 2000)], clock.now)
    assert remaining == 0
    late = await take(store, tokens(1), clock.now)
    assert not late.allowed and late.retry_after_s == pytest.approx((700 + 2000 + 1 - 1000) * 0.06)


async def test_a_refund_never_fills_the_bucket_beyond_its_capacity(store, key, clock):
    (remaining,) = await store.adjust([RateDelta(key, 1000, 60, -5000)], clock.now)
    assert remaining == 1000
    assert (await take(store, Rate(key, 1000, 60, 1000), clock.now)).allowed
    assert not (await take(store, Rate(key, 1000, 60, 1), clock.now)).allowed


async def test_all_checks_or_none(store, key, clock):
    requests, tokens = Rate(key + ":rpm", 10, 60, 1), Rate(key + ":tpm", 100, 60, 80)
    assert all(v.allowed for v in await store.acquire([requests, tokens], clock.now))
    verdicts = await store.acquire([requests, tokens], clock.now)
    assert [v.allowed for v in verdicts] == [True, False]
    # The refused admission charged nothing: the request budget still has 9 left.
    assert (await take(store, requests, clock.now)).remaining == 8


async def test_concurrency_slots_are_held_until_released_or_expired(store, key, clock):
    def slot(lease: str) -> Slot:
        return Slot(key, limit=2, lease=lease, ttl_s=30)

    assert (await take(store, slot("a"), clock.now)).remaining == 1
    assert (await take(store, slot("b"), clock.now)).remaining == 0
    assert not (await take(store, slot("c"), clock.now)).allowed
    assert (await take(store, slot("a"), clock.now)).allowed  # the same lease again holds no second slot

    await store.adjust([Release(key, "a")], clock.now)
    await store.adjust([Release(key, "a")], clock.now)  # releasing twice frees nothing more
    assert (await take(store, slot("c"), clock.now)).allowed
    assert not (await take(store, slot("d"), clock.now)).allowed

    clock.advance(31)  # the holders crashed: their leases lapse
    assert (await take(store, slot("d"), clock.now)).allowed


async def test_quotas_soft_and_strict_reconciled_and_renewed(store, key, clock):
    end = clock.now + 3600
    spend = Quota(key + ":usd", limit=1.0, cost=0.6, expires_at=end)
    assert (await take(store, spend, clock.now)).remaining == pytest.approx(0.4)
    assert (await take(store, spend, clock.now)).allowed  # still under: an estimate may overshoot once
    refused = await take(store, spend, clock.now)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(3600)

    (used,) = await store.adjust([QuotaDelta(key + ":usd", -0.5, end)], clock.now)  # cheaper than estimated
    assert used == pytest.approx(0.7)
    assert (await take(store, spend, clock.now)).allowed

    count = Quota(key + ":n", limit=2, cost=1, expires_at=end, strict=True)
    assert [(await take(store, count, clock.now)).allowed for _ in range(3)] == [True, True, False]

    clock.advance(3600)  # the period is over: counting starts again
    assert (await take(store, count, clock.now)).remaining == 1
    (used,) = await store.adjust([QuotaDelta(key + ":usd", -10, end + 3600)], clock.now)
    assert used == 0  # never below zero


async def test_concurrent_admissions_each_all_or_nothing(store, key, clock):
    """Many at once (the Redis store sends them in batches): exactly the limit passes, refusals take nothing."""

    def request(n: int) -> list:
        return [Rate(key + ":rpm", 10, 60, 1), Slot(key + ":conc", 100, f"lease-{n}", 30)]

    results = await asyncio.gather(*(store.acquire(request(n), clock.now) for n in range(30)))
    assert sum(all(v.allowed for v in verdicts) for verdicts in results) == 10
    assert all(verdicts[1].allowed for verdicts in results)  # the slot alone would have passed every time
    (held,) = await store.acquire([Slot(key + ":conc", 11, "probe", 30)], clock.now)
    assert held.allowed and held.remaining == 0  # 10 taken by the admitted ones, the 11th by the probe


async def test_a_waiting_admission_gets_the_next_slot_of_the_rate(store, key, clock):
    limiter = Limiter(lambda: store, fail_closed=False, clock=clock, sleep=clock.sleep)
    rate = [Limit(Rate(key, 10, 60, 1), "requests", "10 requests per minute", "requests")]
    for _ in range(10):
        assert (await limiter.admit(rate)).how == "direct"
    start = clock.now
    refused = await limiter.admit(rate, wait_s=5)  # the next one frees in 6 s
    assert not refused.admitted and clock.now == start
    waited = await limiter.admit(rate, wait_s=7)
    assert waited.admitted and waited.how == "waited" and clock.now - start == pytest.approx(6.0)


async def test_waiting_never_helps_a_quota_and_an_oversized_request_never_passes(store, key, clock):
    limiter = Limiter(lambda: store, fail_closed=False, clock=clock, sleep=clock.sleep)
    spent = [Limit(Quota(key, 1.0, 2.0, clock.now + 60, strict=True), "budget_day", "the budget")]
    start = clock.now
    assert not (await limiter.admit(spent, wait_s=60)).admitted
    assert clock.now == start  # refused at once: waiting would not help
    huge = [Limit(Rate(key + ":t", 1000, 60, 5000), "tokens", "1000 tokens per minute", "tokens")]
    decision = await limiter.admit(huge, wait_s=60)
    assert not decision.admitted and math.isinf(decision.binding()[1].retry_after_s)


# ---- the Redis store's own behaviour: expiry, outages


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_redis_keys_are_namespaced_and_expire(redis_server, key, clock):
    import redis.asyncio as aioredis

    store = RedisStore(redis_server.url, timeout_s=2.0)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        checks = [Rate(key + ":r", 10, 60, 1), Slot(key + ":s", 2, "a", 30), Quota(key + ":q", 1, 0.5, clock.now + 90)]
        await store.acquire(checks, clock.now)
        ttls = [await client.pttl(check.key) for check in checks]
        assert 0 < ttls[0] <= 6_000 and 0 < ttls[1] <= 30_000 and 0 < ttls[2] <= 90_000
        assert sorted(k.decode() for k in await client.keys(key + "*")) == sorted(c.key for c in checks)
    finally:
        await client.aclose()
        await store.close()


async def test_an_unreachable_redis_fails_fast_and_the_policy_decides(clock, caplog):
    port = free_port()  # nothing listens there
    metrics = Metrics()
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.5, metrics=metrics, clock=clock)
    check = [Limit(Rate("x", 1, 60, 1), "requests", "1 request per minute", "requests")]
    try:
        opened = await Limiter(lambda: store, fail_closed=False, clock=clock).admit(check)
        assert opened.admitted and opened.how == "fail_open"
        with pytest.raises(ServiceUnavailable) as refused:
            await Limiter(lambda: store, fail_closed=True, clock=clock).admit(check)
        assert refused.value.status == 503 and refused.value.code == "limits_unavailable"
        assert not await store.ping()
        clock.advance(61)  # after the cool-down it tries again; after the log interval it may log again
        await Limiter(lambda: store, fail_closed=False, clock=clock).admit(check)
    finally:
        await store.close()
    failures = metrics.registry.get_sample_value(
        "agent_proxy_state_backend_errors_total", {"backend": "redis", "op": "acquire"}
    )
    assert failures == 2  # the call during the cool-down never touched the network
    logged = [r for r in caplog.records if r.getMessage() == "redis state backend unreachable"]
    assert len(logged) == 2  # once per interval, not once per request
    assert f"{port}" not in " ".join(str(getattr(r, "fields", "")) for r in logged)


# ---- both stores compute the same thing (the Lua mirrors proxy/state/arith.py)

_op = st.one_of(
    st.tuples(st.just("rate"), st.integers(1, 30), st.sampled_from([1.0, 7.0, 60.0]), st.integers(1, 40)),
    st.tuples(st.just("refund"), st.integers(1, 30), st.sampled_from([1.0, 7.0, 60.0]), st.integers(-40, 40)),
    st.tuples(st.just("slot"), st.integers(1, 3), st.sampled_from(["a", "b", "c", "d"]), st.just(0)),
    st.tuples(st.just("release"), st.just(0), st.sampled_from(["a", "b", "c", "d"]), st.just(0)),
    st.tuples(st.just("quota"), st.integers(1, 5), st.sampled_from([True, False]), st.integers(0, 3)),
    st.tuples(st.just("wait"), st.just(0), st.sampled_from([0.001, 0.5, 3.0, 13.0]), st.just(0)),
)


def _call(op, prefix: str, now: float):
    kind, a, b, c = op
    if kind == "rate":
        return "acquire", Rate(f"{prefix}:r:{b}", a, b, c)
    if kind == "refund":
        return "adjust", RateDelta(f"{prefix}:r:{b}", a, b, c)
    if kind == "slot":
        return "acquire", Slot(f"{prefix}:s", a, b, 20)
    if kind == "release":
        return "adjust", Release(f"{prefix}:s", b)
    if kind == "quota":
        return "acquire", Quota(f"{prefix}:q", a, c, now + 30, strict=b)
    return "wait", b


async def _replay(store: Store, ops, prefix: str) -> list[tuple]:
    now, seen = 1_900_000_000.0, []
    for op in ops:
        what, arg = _call(op, prefix, now)
        if what == "wait":
            now += arg
        elif what == "acquire":
            (v,) = await store.acquire([arg], now)
            seen.append((v.allowed, v.remaining, v.reset_s, v.retry_after_s))
        else:
            seen.append(tuple(await store.adjust([arg], now)))
    return seen


def _agree(a: list[tuple], b: list[tuple]) -> bool:
    """Equal within the stores' float slack (Redis keeps times to the microsecond); rounding both to a few
    decimals would split values that sit on a rounding boundary."""
    return len(a) == len(b) and all(
        len(x) == len(y) and all(math.isclose(p, q, rel_tol=0, abs_tol=EPS) for p, q in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=40))
@example(ops=[("rate", 2, 1.0, 1), ("rate", 5, 1.0, 1), ("rate", 16, 1.0, 1)])  # a reset of 0.7625 s
def test_memory_and_redis_agree_on_every_sequence(redis_server, ops):
    async def both():
        prefix = "parity:" + uuid.uuid4().hex
        redis_store = RedisStore(redis_server.url, timeout_s=2.0)
        try:
            return await _replay(MemoryStore(), ops, prefix), await _replay(redis_store, ops, prefix)
        finally:
            await redis_store.close()

    memory, redis = asyncio.run(both())
    assert _agree(memory, redis), (memory, redis)


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


_NEAR_A_HALF = st.integers(0, 2**51).flatmap(
    lambda k: st.sampled_from([(k + 0.5) / 1e6, math.nextafter((k + 0.5) / 1e6, 0), math.nextafter((k + 0.5) / 1e6, 9)])
)


@given(x=st.floats() | st.floats(1.7e9, 2.3e9) | st.floats(0, 1) | _NEAR_A_HALF)
@example(x=-0.0)
@example(x=2.0**51 / 1e6)
def test_the_memory_store_keeps_numbers_to_the_microsecond_exactly_as_round_does(x):
    """What the memory store keeps must be bit for bit round(x, 6) (the Redis store's '%.6f'), ties and all."""
    assert _bits(round_to(x, 6)) == _bits(round(x, 6))

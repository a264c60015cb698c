"""The Redis store: counters shared by every replica, one Lua script per call.

Calls that arrive while one is in flight are batched into the next (each request still
all-or-nothing on its own, see proxy/state/lua.py): under load one round trip carries
many admissions, and the client library's per-call cost is paid once for all of them;
with no concurrency nothing waits. Every call is bounded by `timeout_s` (socket connect
and read timeouts, and a hard deadline around it; redis-py retries only a broken pooled
connection, once, at once), and a request waits at most two of them (the call in flight,
then its own). A failed call raises `BackendUnavailable` for every request in it and
starts a short cool-down during which calls fail at once instead of each waiting out
the timeout against a hung server; after it the next call tries again, so recovery
needs nothing but Redis coming back. Failures are counted, and logged at most once per
`log_interval_s`; the URL (it may hold a password) is never logged. Settlements that fail
are kept and retried, and slot leases renewed, by the store's `Upkeep` (proxy/state/upkeep.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from proxy.logs import log_event
from proxy.metrics import Metrics
from proxy.state.base import (
    RATE,
    SLOT,
    BackendUnavailable,
    Change,
    Check,
    Once,
    Plan,
    QuotaDelta,
    RateDelta,
    Release,
    Renew,
    Slot,
    Store,
    Undo,
)
from proxy.state.lua import ACQUIRE, ADJUST
from proxy.state.upkeep import MAX_PENDING, ONCE_TTL_S, Upkeep

log = logging.getLogger("agent_proxy.state")

COOLDOWN_S = 0.5
LOG_INTERVAL_S = 60.0
MAX_BATCH = 64  # requests per script call: a long script would hold up every other Redis client
LEASE_S = 20.0


def _num(value: float) -> str:
    return repr(float(value))


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _wire(plan: Plan) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """A plan's keys, and each row's script spec around its amount (see proxy/state/lua.py), made once."""
    heads: list[tuple[str, str]] = []
    for kind, _, limit, window, strict in plan.rows:
        if kind == RATE:
            heads.append((f"r,{limit},{_num(window)},", ",-"))
        elif kind == SLOT:
            heads.append((f"s,{limit},", f",{_num(window)},-"))
        else:
            heads.append((f"q,{_num(limit)},", f",{_num(window)},{'1' if strict else '0'}"))
    return tuple(row[1] for row in plan.rows), tuple(heads)


def connect(url: str, timeout_s: float) -> tuple[Any, tuple[type[BaseException], ...]]:
    """A redis-py asyncio client (it connects lazily) and the errors its calls raise.

    Every call is bounded by `timeout_s`; a broken pooled connection (one from before a Redis
    restart) is retried once at once, a timeout never.
    """
    try:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:  # an optional dependency: pip install 'agent-proxy[redis]'
        raise RuntimeError("a Redis backend needs the redis package: agent-proxy[redis]") from exc
    client = aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(aioredis.ConnectionError,)),
        health_check_interval=0,
    )
    return client, (aioredis.RedisError, TimeoutError, OSError)


@dataclass(slots=True)
class _Queue:
    """Calls of one script waiting for the next round trip: (keys, specs, now, future of the figures)."""

    op: str
    script: Any
    figures_per_key: int
    items: list[tuple[list[str], list[str], float, asyncio.Future[list[str]]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class RedisStore(Store):
    backend: ClassVar[str] = "redis"

    def __init__(
        self,
        url: str,
        timeout_s: float,
        metrics: Metrics | None = None,
        *,
        cooldown_s: float = COOLDOWN_S,
        log_interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        lease_s: float = LEASE_S,
        max_pending: int = MAX_PENDING,
    ):
        self._client, self._errors = connect(url, timeout_s)
        self._acquires = _Queue("acquire", self._client.register_script(ACQUIRE), 4)
        self._adjusts = _Queue("adjust", self._client.register_script(ADJUST), 1)
        self.timeout_s = timeout_s
        self._metrics = metrics
        self._up_gauge = metrics.state_backend_up.labels(self.backend) if metrics is not None else None
        self._cooldown_s = cooldown_s
        self._log_interval_s = log_interval_s
        self._clock = clock
        self._down_until = 0.0
        self._failing = False
        self._logged_at: float | None = None
        self._suppressed = 0
        self.lease_s = lease_s
        self.upkeep = Upkeep(self, lease_s, metrics, max_pending=max_pending)
        self._set_up(True)

    # ---- the calls

    async def admit(self, plan: Plan, amounts: Sequence[Any], now: float, once_key: str | None = None) -> list[float]:
        wire = plan.wire
        if wire is None:
            wire = plan.wire = _wire(plan)
        keys, heads = wire  # type: ignore[misc]
        marked = once_key is not None and plan.marked
        if marked:  # slots alone need no marker: a lost one lapses with its lease, a release is idempotent
            keys = [once_key, *keys]
            specs = [f"o,{_ms(ONCE_TTL_S)},-,-,-"]
        else:
            specs = []
        for (head, tail), amount in zip(heads, amounts, strict=True):
            specs.append(f"{head}{amount if isinstance(amount, str) else _num(amount)}{tail}")
        figures = await self._submit(self._acquires, list(keys), specs, now)
        live = not marked or figures[0] == "1"  # else cancelled by an undo: nothing was applied
        out: list[float] = []
        for i in range(4 if marked else 0, len(figures), 4):
            out += (live and figures[i] == "1", float(figures[i + 1]), float(figures[i + 2]), float(figures[i + 3]))
        return out

    async def adjust(self, changes: Sequence[Change], now: float) -> list[float]:
        keys: list[str] = []
        specs: list[str] = []
        for change in changes:
            keys.append(change.key)
            if isinstance(change, RateDelta):
                specs.append(f"r,{change.limit},{_num(change.period_s)},{_num(change.delta)}")
            elif isinstance(change, Release):
                specs.append(f"s,{change.lease}")
            elif isinstance(change, QuotaDelta):
                specs.append(f"q,{_num(change.delta)},{_num(change.expires_at)}")
            elif isinstance(change, Renew):
                specs.append(f"l,{change.lease},{_num(change.ttl_s)}")
            elif isinstance(change, Once):
                specs.append(f"o,{_ms(change.ttl_s)}")
            elif isinstance(change, Undo):
                specs.append(f"u,{_ms(change.ttl_s)}")
        figures = await self._submit(self._adjusts, keys, specs, now)
        return [math.nan if value == "x" else float(value) for value in figures]

    async def settle(self, changes: Sequence[Change], now: float, once_key: str) -> list[float] | None:
        return await self.upkeep.settle(changes, once_key, now)

    def cancel(self, checks: Sequence[Check], once_key: str) -> None:
        self.upkeep.cancel(checks, once_key)

    def hold(self, slot: Slot) -> None:
        self.upkeep.hold(slot)

    def let_go(self, lease: str) -> None:
        self.upkeep.let_go(lease)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client.ping()
        except self._errors:
            self._set_up(False)
            return False
        self._down_until = 0.0  # reachable again: no need to wait out the cool-down
        self._recovered()
        return True

    async def close(self) -> None:
        self._down_until = 0.0  # the last attempt at what is pending tries Redis itself, cool-down or not
        await self.upkeep.close()
        for queue in (self._acquires, self._adjusts):
            if queue.task is not None:
                await asyncio.gather(queue.task, return_exceptions=True)
        await self._client.aclose()

    async def _submit(self, queue: _Queue, keys: list[str], specs: list[str], now: float) -> list[str]:
        if not keys:
            return []
        if self._clock() < self._down_until:
            raise BackendUnavailable("redis is unreachable (cooling down after a failure)", maybe_applied=False)
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        queue.items.append((keys, specs, now, future))
        if queue.task is None:
            queue.task = asyncio.create_task(self._drain(queue))
        try:
            async with asyncio.timeout(2 * self.timeout_s):
                return await future
        except TimeoutError:
            self._failed(queue.op, TimeoutError())
            raise BackendUnavailable("redis did not answer in time") from None

    async def _drain(self, queue: _Queue) -> None:
        """Send what has queued up, one script call at a time, until nothing is left."""
        try:
            while queue.items:
                items = [item for item in queue.items[:MAX_BATCH] if not item[3].done()]  # done: the caller gave up
                del queue.items[:MAX_BATCH]
                if not items:
                    continue
                if self._clock() < self._down_until:
                    self._fail(items, BackendUnavailable("redis is unreachable (cooling down)", maybe_applied=False))
                    continue
                keys = [key for item in items for key in item[0]]
                groups = ",".join(f"{len(item[0])}:{_num(item[2])}" for item in items)
                specs = ";".join(spec for item in items for spec in item[1])
                try:
                    async with asyncio.timeout(self.timeout_s):
                        raw: bytes = await queue.script(keys=keys, args=[groups, specs])
                except Exception as exc:  # unreachable, slow, read-only, out of memory: an outage either way
                    self._failed(queue.op, exc)
                    self._fail(items, BackendUnavailable(f"redis is unreachable ({type(exc).__name__})"))
                    continue
                self._recovered()
                figures = raw.decode().split(",")
                at = 0
                for item_keys, _, _, future in items:
                    size = len(item_keys) * queue.figures_per_key
                    if not future.done():
                        future.set_result(figures[at : at + size])
                    at += size
        finally:
            queue.task = None

    @staticmethod
    def _fail(items: list[tuple[Any, Any, Any, asyncio.Future[list[str]]]], error: BackendUnavailable) -> None:
        for *_, future in items:
            if not future.done():
                future.set_exception(error)

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log_event(log, "redis state backend reachable again", backend="redis")
            self.upkeep.wake()
        self._set_up(True)

    # ---- failure bookkeeping

    def _failed(self, op: str, exc: BaseException) -> None:
        now = self._clock()
        self._down_until = now + self._cooldown_s
        self._failing = True
        self._set_up(False)
        if self._metrics is not None:
            self._metrics.state_backend_errors.labels("redis", op).inc()
        if self._logged_at is None or now - self._logged_at >= self._log_interval_s:
            log_event(
                log,
                "redis state backend unreachable",
                logging.WARNING,
                backend="redis",
                op=op,
                error=type(exc).__name__,
                suppressed=self._suppressed,
                next_log_in_s=self._log_interval_s,
            )
            self._logged_at, self._suppressed = now, 0
        else:
            self._suppressed += 1

    def _set_up(self, up: bool) -> None:
        if self._up_gauge is not None:
            self._up_gauge.set(1 if up else 0)

"""What a shared store keeps doing after a request's own calls: settle what failed, renew what is held.

Settlements (slot releases, token refunds, budget corrections) that meet an outage are kept
in memory and retried until the backend answers: with backoff (`RETRY_MIN_S` doubling to
`RETRY_MAX_S`), and at once when any other call finds the backend again, so slots held
through a stall are back within about a second of its end. At most `max_pending` are kept;
past that the oldest is dropped and counted (its slot still lapses with its lease). A
settlement that changes counts carries a marker (`Once`, keyed by the admission's own id,
never a caller's header) so an attempt whose reply was lost, applied by Redis all the same,
is not applied a second time by its retry; releases need none (releasing twice is a no-op).

Slots are leased for `lease_s` and renewed every `lease_s / RENEWALS_PER_LEASE`, every
lease of this process in one call whatever the number of streams, so a replica that dies
gives its slots back at most `lease_s` after its last renewal, and a live one keeps them
through an outage of up to `lease_s` minus one renewal interval.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any

from proxy.metrics import Metrics
from proxy.state.base import (
    BackendUnavailable,
    Change,
    Check,
    Once,
    Quota,
    QuotaDelta,
    Rate,
    RateDelta,
    Release,
    Renew,
    Slot,
    Store,
    Undo,
)

log = logging.getLogger("agent_proxy.state")

RETRY_MIN_S = 0.05
RETRY_MAX_S = 1.0
RENEWALS_PER_LEASE = 4
ONCE_TTL_S = 300.0  # a retry landing later than this after a lost reply could apply a correction twice
MAX_PENDING = 10_000
FLUSH_CHUNK = 512  # settlements retried per pass: a backlog never crowds out the live requests' own calls


class Upkeep:
    def __init__(
        self,
        store: Store,
        lease_s: float,
        metrics: Metrics | None = None,
        *,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.time,
    ):
        self._store = store
        self.lease_s = lease_s
        self._max_pending = max_pending
        self._clock = clock
        self._pending: deque[list[Change]] = deque()
        self._held: dict[str, Renew] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._renew_at = 0.0
        self._flush_at = math.inf
        backend = store.backend
        self._m: dict[str, Any] | None = (
            None
            if metrics is None
            else {
                "pending": metrics.state_settlements_pending.labels(backend),
                "deferred": metrics.state_settlements_deferred.labels(backend),
                "dropped": metrics.state_settlements_dropped.labels(backend),
                "lapsed": metrics.state_leases_lapsed.labels(backend),
            }
        )

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def held(self) -> int:
        return len(self._held)

    # ---- settlements

    async def settle(self, changes: Sequence[Change], once_key: str, now: float) -> list[float] | None:
        counted = any(isinstance(change, RateDelta | QuotaDelta) for change in changes)
        call: list[Change] = [Once(once_key, ONCE_TTL_S), *changes] if counted else list(changes)
        try:
            results = await self._store.adjust(call, now)
        except BackendUnavailable:
            self._keep(call)
            return None
        return results[1:] if counted else results

    def cancel(self, checks: Sequence[Check], once_key: str) -> None:
        """Undo an admission whose call failed without an answer, if it was (or is yet to be) applied."""
        if not any(isinstance(check, Rate | Quota) for check in checks):
            return  # no marker was sent (slots only): the request's own release, and the lease, cover it
        undo: list[Change] = [Undo(once_key, ONCE_TTL_S)]
        for check in checks:
            if isinstance(check, Rate):
                undo.append(RateDelta(check.key, check.limit, check.period_s, -check.cost))
            elif isinstance(check, Quota):
                undo.append(QuotaDelta(check.key, -check.cost, check.expires_at))
            else:
                undo.append(Release(check.key, check.lease))
        self._keep(undo)  # the store just failed: the first try waits for the backoff

    def _keep(self, call: list[Change]) -> None:
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self._count("dropped")
        self._pending.append(call)
        self._count("deferred")
        self._gauge()
        self._start()

    async def _flush(self) -> bool:
        """The oldest `FLUSH_CHUNK` pending settlements once (the store batches them); True if that went through."""
        calls = list(islice(self._pending, FLUSH_CHUNK))
        now = self._clock()
        outcomes = await asyncio.gather(*(self._store.adjust(call, now) for call in calls), return_exceptions=True)
        done: set[int] = set()
        reached = False
        for call, outcome in zip(calls, outcomes, strict=True):
            if isinstance(outcome, BackendUnavailable):
                continue
            reached = True
            done.add(id(call))
            if isinstance(outcome, BaseException):  # not an outage: retrying would fail the same way
                log.error("a settlement could not be applied and is dropped: %s", type(outcome).__name__)
                self._count("dropped")
        if done:  # kept meanwhile, or not yet landed: still pending, in their order
            self._pending = deque(call for call in self._pending if id(call) not in done)
        self._gauge()
        return reached

    # ---- leases

    def hold(self, slot: Slot) -> None:
        self._held[slot.lease] = Renew(slot.key, slot.lease, self.lease_s)
        self._start()

    def let_go(self, lease: str) -> None:
        self._held.pop(lease, None)

    async def _renew(self) -> bool:
        renewals = list(self._held.values())
        try:
            results = await self._store.adjust(renewals, self._clock())
        except BackendUnavailable:
            return False
        except Exception:  # not an outage; the leases may lapse, the response goes on
            log.exception("lease renewal failed")
            return False
        for renewal, renewed in zip(renewals, results, strict=True):
            if not renewed and self._held.pop(renewal.lease, None) is not None:
                self._count("lapsed")  # lapsed during an outage longer than the lease: not taken back
        return True

    # ---- the one background task

    def wake(self) -> None:
        """The backend answered a call: retry what is pending now rather than after the backoff."""
        if self._wake is not None and self._pending:
            self._flush_at = 0.0
            self._wake.set()

    def _start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif self._pending and self._flush_at == math.inf:  # the task sleeps until a renewal: retry sooner
            assert self._wake is not None
            self._flush_at = asyncio.get_running_loop().time() + RETRY_MIN_S
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        interval = self.lease_s / RENEWALS_PER_LEASE
        delay = renew_delay = RETRY_MIN_S
        self._renew_at = loop.time() + interval
        self._flush_at = loop.time() + RETRY_MIN_S
        try:
            while self._pending or self._held:
                self._wake.clear()
                if self._held and loop.time() >= self._renew_at:
                    if await self._renew():
                        renew_delay = RETRY_MIN_S
                        self._renew_at = loop.time() + interval
                    else:  # retried well before the leases lapse
                        self._renew_at = loop.time() + min(interval, renew_delay)
                        renew_delay = min(renew_delay * 2, RETRY_MAX_S)
                if self._pending and loop.time() >= self._flush_at:
                    delay = RETRY_MIN_S if await self._flush() else min(delay * 2, RETRY_MAX_S)
                    self._flush_at = loop.time() + (0.0 if delay == RETRY_MIN_S and self._pending else delay)
                if not self._pending:
                    self._flush_at = math.inf
                next_at = min(self._renew_at if self._held else math.inf, self._flush_at)
                if next_at == math.inf:
                    break
                try:
                    async with asyncio.timeout(max(0.0, next_at - loop.time())):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            self._task = None

    async def close(self) -> None:
        """At shutdown: one last attempt at what is pending, then stop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._held.clear()
        if self._pending:
            while self._pending and await self._flush():  # chunk by chunk while Redis answers
                pass
            if self._pending:
                log.warning("%d settlements could not be applied before shutdown", len(self._pending))

    def _count(self, name: str) -> None:
        if self._m is not None:
            self._m[name].inc()

    def _gauge(self) -> None:
        if self._m is not None:
            self._m["pending"].set(len(self._pending))

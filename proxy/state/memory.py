"""The in-process store: one replica's counters, in a bounded dict whose entries expire.

Atomic because nothing in `acquire` or `adjust` awaits: the event loop runs one at a time.
An entry expires when the arithmetic says it stops mattering (a rate's TAT, a period's
end, a lease's deadline), judged by the `now` each call passes. At most `max_keys` are
kept: past that, expired entries are swept and then the least recently written go, so
unbounded keys such as agent runs cannot grow memory without bound. (A plain dict rather
than cachetools' TLRUCache: admission is on every request's path, and this is ~5x faster.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any, ClassVar

from proxy.rounding import round_to
from proxy.state.arith import quota_check, rate_adjust, rate_check, slot_check
from proxy.state.base import (
    QUOTA,
    RATE,
    SLOT,
    Change,
    Plan,
    Quota,
    QuotaDelta,
    Rate,
    RateDelta,
    Release,
    Renew,
    Row,
    Slot,
    Store,
)
from proxy.state.memory_plans import _gone, _Leases, admission, settlement

DEFAULT_MAX_KEYS = 200_000


class MemoryStore(Store):
    backend: ClassVar[str] = "memory"
    immediate: ClassVar[bool] = True

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS):
        self._data: dict[str, tuple[Any, float]] = {}  # key -> (value, expires at)
        self._max_keys = max_keys

    def __len__(self) -> int:
        return len(self._data)

    def _put(self, key: str, value: Any, expires: float, now: float) -> None:
        """Times and totals are kept to the microsecond, as the Redis store keeps them."""
        data = self._data
        data.pop(key, None)  # re-inserted last: the dict's order is the order of last write
        if expires <= now:
            return
        if isinstance(value, float):
            value = round_to(value, 6)
        data[key] = (value, expires)
        if len(data) > self._max_keys:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        data = self._data
        for key in [key for key, (_, expires) in data.items() if expires <= now]:
            del data[key]
        excess = len(data) - self._max_keys * 9 // 10
        for key in list(islice(data, max(0, excess))):
            del data[key]

    async def admit(self, plan: Plan, amounts: Sequence[Any], now: float, once_key: str | None = None) -> list[float]:
        return self.admit_now(plan, amounts, now)

    def admit_now(self, plan: Plan, amounts: Sequence[Any], now: float) -> list[float]:
        """`admit` without a coroutine: nothing here waits. The plan's rows written out answer the usual case
        (see proxy/state/memory_plans.py); a refusal, or a store near `max_keys`, takes `_admit_rows`."""
        admit = plan.admits
        if admit is None:
            admit = admission(plan)  # kept on the plan
        if admit and (figures := admit(self._data, amounts, now, self._max_keys)) is not None:
            return figures
        return self._admit_rows(plan, amounts, now)

    def _admit_rows(self, plan: Plan, amounts: Sequence[Any], now: float) -> list[float]:
        """The reference admission: every row read and checked in turn; all written, in order, if all pass."""
        figures: list[float] = []
        writes: list[tuple[str, Any, float]] = []
        taken: list[tuple[_Leases, str, float | None]] | None = None  # slots changed in place: undone if refused
        allowed = True
        data = self._data
        for (kind, key, limit, window, strict), amount in zip(plan.rows, amounts, strict=True):
            entry = data.get(key)  # the key's live value, read inline (a call per key costs): an expired one goes
            held = None if entry is None else entry[0] if entry[1] > now else _gone(data, key)
            if kind == RATE:
                verdict, tat = rate_check(held, now, limit, window, amount)
                figures += verdict
                ok = verdict[0]
                writes.append((key, round_to(tat, 6), tat))
            elif kind == SLOT:
                leases = held or _Leases()
                leases.expire(now)
                before = leases.get(amount)
                verdict = slot_check(leases, now, limit, amount, window)
                figures += verdict
                ok = verdict[0]
                if ok:
                    leases.put(amount, leases[amount])
                    if taken is None:
                        taken = []
                    taken.append((leases, amount, before))
                writes.append((key, leases, leases.latest))
            else:
                used = held or 0.0
                verdict = quota_check(used, now, limit, amount, window, strict)
                figures += verdict
                ok = verdict[0]
                total = used + amount
                writes.append((key, round_to(total, 6) if isinstance(total, float) else total, window))
            if not ok:
                allowed = False
        if allowed:  # `_put` of each write, in order (their numbers rounded above)
            for key, value, expires in writes:
                data.pop(key, None)
                if expires <= now:
                    continue
                data[key] = (value, expires)
                if len(data) > self._max_keys:
                    self._sweep(now)
        elif taken is not None:
            for leases, lease, before in taken:
                if before is None:
                    del leases[lease]
                else:
                    leases[lease] = before
        return figures

    async def adjust(self, changes: Sequence[Change], now: float) -> list[float]:
        return self.adjust_now(changes, now)

    async def settle(self, changes: Sequence[Change], now: float, once_key: str) -> list[float] | None:
        """Never fails here, so never kept for later: `adjust` (one coroutine less per request)."""
        return self.adjust_now(changes, now)

    def adjust_now(self, changes: Sequence[Change], now: float) -> list[float]:
        return self._apply([_row(change) for change in changes], now)

    def settle_now(self, plan: Plan, amounts: Sequence[Any], now: float) -> list[float]:
        settle = plan.settles
        if settle is None:
            settle = settlement(plan)  # kept on the plan
        if settle and (results := settle(self._data, amounts, now, self._max_keys)) is not None:
            return results
        return self._apply(zip(plan.rows, amounts, strict=True), now)

    def _apply(self, changes: Iterable[tuple[Row, Any]], now: float) -> list[float]:
        """Changes as rows and amounts (see `Plan.changes`; RENEW and MARK rows for the other two kinds)."""
        results: list[float] = []
        data = self._data
        for (kind, key, limit, window, _), amount in changes:
            entry = data.get(key)  # the key's live value, as in `admit_now`
            held = None if entry is None else entry[0] if entry[1] > now else _gone(data, key)
            if kind == SLOT:  # a release
                if held is not None and held.pop(amount, None) is not None and not held:
                    del data[key]
                results.append(0.0)
            elif kind == RATE:
                tat, remaining = rate_adjust(held, now, limit, window, amount)
                self._put(key, tat, tat, now)
                results.append(remaining)
            elif kind == QUOTA:
                used = max(0.0, (held or 0.0) + amount)
                self._put(key, used, window, now)
                results.append(used)
            elif kind == RENEW:
                renewed = held is not None and held.get(amount, 0.0) > now
                if renewed:
                    held.put(amount, now + window)
                    self._put(key, held, held.latest, now)
                results.append(1.0 if renewed else 0.0)
            else:  # Once, Undo: nothing here is ever lost or retried, so there is nothing to apply twice
                results.append(0.0)
        return results

    async def ping(self) -> bool:
        return True


RENEW, MARK = "l", "o"  # `_apply`'s rows for a renewal, and for a marker (Once, Undo)


def _row(change: Change) -> tuple[Row, Any]:
    """A change as the row and amount `_apply` takes."""
    if isinstance(change, Release):
        return (SLOT, change.key, 0, 0.0, False), change.lease
    if isinstance(change, RateDelta):
        return (RATE, change.key, change.limit, change.period_s, False), change.delta
    if isinstance(change, QuotaDelta):
        return (QUOTA, change.key, 0.0, change.expires_at, False), change.delta
    if isinstance(change, Renew):
        return (RENEW, change.key, 0, change.ttl_s, False), change.lease
    return (MARK, change.key, 0, 0.0, False), None


__all__ = ["MemoryStore", "Quota", "Rate", "Slot"]

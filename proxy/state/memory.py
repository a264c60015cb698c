"""The in-process store: one replica's counters, in a bounded dict whose entries expire.

Atomic because nothing in `acquire` or `adjust` awaits: the event loop runs one at a time.
An entry expires when the arithmetic says it stops mattering (a rate's TAT, a period's
end, a lease's deadline), judged by the `now` each call passes. At most `max_keys` are
kept: past that, expired entries are swept and then the least recently written go, so
unbounded keys such as agent runs cannot grow memory without bound. (A plain dict rather
than cachetools' TLRUCache: admission is on every request's path, and this is ~5x faster.)
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Any, ClassVar

from proxy.state.arith import quota_check, rate_adjust, rate_check, slot_check
from proxy.state.base import (
    Change,
    Check,
    Quota,
    QuotaDelta,
    Rate,
    RateDelta,
    Release,
    Renew,
    Slot,
    Store,
    Verdict,
)

DEFAULT_MAX_KEYS = 200_000


class MemoryStore(Store):
    backend: ClassVar[str] = "memory"

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS):
        self._data: dict[str, tuple[Any, float]] = {}  # key -> (value, expires at)
        self._max_keys = max_keys

    def __len__(self) -> int:
        return len(self._data)

    def _get(self, key: str, now: float) -> Any:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._data[key]
            return None
        return entry[0]

    def _put(self, key: str, value: Any, expires: float, now: float) -> None:
        """Times and totals are kept to the microsecond, as the Redis store keeps them."""
        data = self._data
        data.pop(key, None)  # re-inserted last: the dict's order is the order of last write
        if expires <= now:
            return
        if isinstance(value, float):
            value = round(value, 6)
        elif isinstance(value, dict):
            value = {lease: round(deadline, 6) for lease, deadline in value.items()}
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

    async def acquire(self, checks: Sequence[Check], now: float, once_key: str | None = None) -> list[Verdict]:
        verdicts: list[Verdict] = []
        writes: list[tuple[str, Any, float]] = []
        for check in checks:
            if isinstance(check, Rate):
                verdict, tat = rate_check(self._get(check.key, now), now, check.limit, check.period_s, check.cost)
                writes.append((check.key, tat, tat))
            elif isinstance(check, Slot):
                leases = dict(self._get(check.key, now) or {})
                verdict = slot_check(leases, now, check.limit, check.lease, check.ttl_s)
                writes.append((check.key, leases, max(leases.values(), default=now)))
            else:
                used = self._get(check.key, now) or 0.0
                verdict = quota_check(used, now, check.limit, check.cost, check.expires_at, check.strict)
                writes.append((check.key, used + check.cost, check.expires_at))
            verdicts.append(verdict)
        if all(v.allowed for v in verdicts):
            for key, value, expires in writes:
                self._put(key, value, expires, now)
        return verdicts

    async def adjust(self, changes: Sequence[Change], now: float) -> list[float]:
        results: list[float] = []
        for change in changes:
            if isinstance(change, RateDelta):
                tat = self._get(change.key, now)
                tat, remaining = rate_adjust(tat, now, change.limit, change.period_s, change.delta)
                self._put(change.key, tat, tat, now)
                results.append(remaining)
            elif isinstance(change, Release):
                leases = self._get(change.key, now)
                if leases is not None and leases.pop(change.lease, None) is not None and not leases:
                    del self._data[change.key]
                results.append(0.0)
            elif isinstance(change, QuotaDelta):
                used = max(0.0, (self._get(change.key, now) or 0.0) + change.delta)
                self._put(change.key, used, change.expires_at, now)
                results.append(used)
            elif isinstance(change, Renew):
                leases = self._get(change.key, now)
                renewed = leases is not None and leases.get(change.lease, 0.0) > now
                if renewed:
                    leases[change.lease] = now + change.ttl_s
                    self._put(change.key, leases, max(leases.values()), now)
                results.append(1.0 if renewed else 0.0)
            else:  # Once, Undo: nothing here is ever lost or retried, so there is nothing to apply twice
                results.append(0.0)
        return results

    async def ping(self) -> bool:
        return True


__all__ = ["MemoryStore", "Quota", "Rate", "Slot"]

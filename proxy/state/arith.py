"""The counter arithmetic, as pure functions: the memory store runs these, the Lua mirrors them.

GCRA (the generic cell rate algorithm) keeps one number per rate, the theoretical
arrival time (TAT): when the bucket would be full again. A request of `cost` units
moves it `cost x period/limit` seconds later, and is admitted if the TAT then lies at
most one `period` ahead of now, so up to `limit` units pass at once and capacity comes
back continuously (no fixed window whose edge lets twice the limit through).
"""

from __future__ import annotations

from math import floor as _floor

# A check's answer: allowed, the units `remaining` after this request, `reset_s` until full again (or until
# the period ends), `retry_after_s` until it would pass (0 when it did). A tuple: several per request.
Figures = tuple[bool, float, float, float]

# Float slack: times are epoch seconds (about 2e-7 s of precision) kept to the microsecond, so a request
# arriving exactly on time is admitted, and a count that is whole is not shown as one less.
EPS = 1e-5
UNIT_EPS = 1e-3
SLOT_RETRY_S = 1.0  # a full concurrency cap cannot know when a slot frees; a hint for retry-after


def _remaining(tat: float, now: float, period_s: float, interval: float) -> float:
    """Whole units left at `tat` (`interval`: a unit's seconds); max(0, floor(...)), without the max() call."""
    left = (now + period_s - tat) / interval + UNIT_EPS
    return float(_floor(left)) if left >= 1.0 else 0.0


def rate_check(tat: float | None, now: float, limit: int, period_s: float, cost: float) -> tuple[Figures, float]:
    """The figures, and the TAT to store if admitted (the old one otherwise)."""
    interval = period_s / limit
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * interval
    allow_at = new_tat - period_s
    if allow_at > now + EPS:
        return (False, _remaining(base, now, period_s, interval), base - now, allow_at - now), base
    return (True, _remaining(new_tat, now, period_s, interval), new_tat - now, 0.0), new_tat


def rate_adjust(tat: float | None, now: float, limit: int, period_s: float, delta: float) -> tuple[float, float]:
    """(new TAT, remaining): a refund never takes the bucket above full, a charge may run it into debt."""
    base = now if tat is None or tat < now else tat
    new_tat = base + delta * period_s / limit
    if not new_tat > now:  # max(now, new_tat)
        new_tat = now
    return new_tat, _remaining(new_tat, now, period_s, period_s / limit)


def slot_check(leases: dict[str, float], now: float, limit: int, lease: str, ttl_s: float) -> Figures:
    """`leases` holds live leases only; mutated: `lease` is added if admitted."""
    if lease not in leases and len(leases) >= limit:
        return False, 0.0, SLOT_RETRY_S, SLOT_RETRY_S
    leases[lease] = now + ttl_s
    return True, float(limit - len(leases)), 0.0, 0.0


def quota_check(used: float, now: float, limit: float, cost: float, expires_at: float, strict: bool) -> Figures:
    allowed = used + cost <= limit + EPS if strict else used < limit
    after = used + cost if allowed else used
    reset_s = max(0.0, expires_at - now)
    return allowed, max(0.0, limit - after), reset_s, 0.0 if allowed else reset_s

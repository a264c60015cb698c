"""Admission: every limit of a request checked in one store call, waiting if the policy allows.

The stages say what to check (`Limit`s: a store check, the reason it refuses for, the
header dimension it reports); this module makes the call, waits for capacity within
`wait_s` when every refusal is of a kind that frees up (rates, concurrency: never
quotas), and applies `state.on_backend_error` when the store is unreachable: admit
(`fail_open`, counted) or 503 (`fail_closed`). Refusal reasons and admission kinds are
small fixed sets, used as metric labels.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from proxy.errors import ServiceUnavailable
from proxy.limits.headers import Report
from proxy.state import BackendUnavailable, Change, Check, Quota, Rate, Release, Slot, Store, Verdict

POLL_S = 0.02  # how often a waiting request asks again for a concurrency slot
REASONS = frozenset(
    {
        "requests",
        "tokens",
        "concurrent",
        "model_requests",
        "model_tokens",
        "model_concurrent",
        "route_requests",
        "route_tokens",
        "route_concurrent",
        "budget_day",
        "budget_month",
        "run_requests",
        "run_tokens",
        "run_usd",
        "loop_request",
        "loop_tool_call",
        "tool_requests",
        "backend_unavailable",
    }
)
ADMITTED_HOW = ("direct", "waited", "fail_open")
_COUNTED = (Rate, Slot)  # the checks the rate headers report (a tuple: `Rate | Slot` is a new object per use)


@dataclass(slots=True)  # several per request: not frozen (see proxy/state/base.py)
class Limit:
    """One check of a request, with what it means: `reason` (a metric label), `dimension`
    (requests or tokens, for the rate headers) and `text` for the refusal message."""

    check: Check
    reason: str
    text: str
    dimension: str | None = None


@dataclass(slots=True)
class Decision:
    admitted: bool
    how: str  # one of ADMITTED_HOW, or "refused"
    results: list[tuple[Limit, Verdict]] = field(default_factory=list)

    @property
    def denied(self) -> list[tuple[Limit, Verdict]]:
        return [(limit, verdict) for limit, verdict in self.results if not verdict.allowed]

    def binding(self) -> tuple[Limit, Verdict]:
        """The refusal that lasts longest: the request passes only once it has lifted."""
        return max(self.denied, key=lambda item: item[1].retry_after_s)

    def reports(self) -> dict[str, Report]:
        """Per dimension, the tightest limit: the one with the fewest units left."""
        reports: dict[str, Report] = {}
        for limit, verdict in self.results:
            dimension, check = limit.dimension, limit.check
            if dimension is None or not isinstance(check, _COUNTED):
                continue
            current = reports.get(dimension)
            if current is None or verdict.remaining < current[1]:
                reports[dimension] = (check.limit, verdict.remaining, verdict.reset_s)
        return reports


def too_large(limit: Limit) -> bool:
    """A rate no request of this size can ever pass (more tokens than a minute's allowance)."""
    check = limit.check
    return isinstance(check, Rate) and check.cost > check.limit


class Limiter:
    def __init__(
        self,
        store: Callable[[], Store],
        fail_closed: bool,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._store = store
        self.fail_closed = fail_closed
        self.clock = clock
        self._sleep = sleep

    async def admit(self, limits: Sequence[Limit], wait_s: float = 0.0, once_key: str | None = None) -> Decision:
        """`once_key` names the admission in the store: its settlement applies once, and an attempt that
        fails without an answer is undone in the background should the store apply it after all."""
        if not limits:
            return Decision(True, "direct")
        checks: list[Check] = []
        oversized = False
        for limit in limits:  # one pass: the checks, and whether any is too large (`too_large`, inlined)
            check = limit.check
            checks.append(check)
            if isinstance(check, Rate) and check.cost > check.limit:
                oversized = True
        if oversized:
            refused = [(limit, Verdict(False, 0.0, 0.0, math.inf)) for limit in limits if too_large(limit)]
            return Decision(False, "refused", refused)
        waited = 0.0
        while True:
            store = self._store()
            try:
                verdicts = await store.acquire(checks, self.clock(), once_key)
            except BackendUnavailable as exc:
                if exc.maybe_applied and once_key is not None:
                    store.cancel(checks, once_key)
                if self.fail_closed:
                    raise ServiceUnavailable(
                        "the proxy cannot check its limits right now (its state backend is unreachable); "
                        "try again shortly",
                        code="limits_unavailable",
                        headers={"retry-after": "1"},
                    ) from None
                return Decision(True, "fail_open")
            allowed = True
            for verdict in verdicts:
                if not verdict.allowed:
                    allowed = False
                    break
            decision = Decision(allowed, "direct", list(zip(limits, verdicts, strict=True)))
            if decision.admitted:
                if waited:
                    decision.how = "waited"
                return decision
            decision.how = "refused"
            pause = self._pause(decision)
            if pause is None or waited + pause > wait_s:
                return decision
            await self._sleep(pause)
            waited += pause

    @staticmethod
    def _pause(decision: Decision) -> float | None:
        """How long until asking again is worth it; None when waiting cannot help."""
        pause = 0.0
        for limit, verdict in decision.denied:
            if isinstance(limit.check, Quota):
                return None
            pause = max(pause, POLL_S if isinstance(limit.check, Slot) else verdict.retry_after_s)
        return max(pause, 0.001)

    @property
    def lease_s(self) -> float | None:
        """How long a slot is leased for before it must be renewed (None: held until released)."""
        return self._store().lease_s

    def hold(self, decision: Decision) -> None:
        """Keep the admitted slots' leases renewed while the response lives."""
        store = self._store()
        if store.lease_s is None:  # nothing to renew (the memory store)
            return
        for limit, _ in decision.results:
            if isinstance(limit.check, Slot):
                store.hold(limit.check)

    async def settle(self, changes: Sequence[Change], once_key: str) -> list[float] | None:
        """Corrections after the response, never refused and never lost: None when the store could not
        apply them yet (it keeps them and retries, applying them once per `once_key`)."""
        if not changes:
            return []
        store = self._store()
        if store.lease_s is not None:  # stop renewing what is released
            for change in changes:
                if isinstance(change, Release):
                    store.let_go(change.lease)
        try:
            return await store.settle(changes, self.clock(), once_key)
        except BackendUnavailable:  # a store without retries of its own
            return None

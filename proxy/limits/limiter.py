"""Admission: every limit of a request checked in one store call, waiting if the policy allows.

The stages say what to check (`Limit`s: a store check, the reason it refuses for, the
header dimension it reports), or hand over limits compiled once (`LimitPlan`, its rows the
store walks) with a request's amounts; this module makes the call, waits for capacity within
`wait_s` when every refusal is of a kind that frees up (rates, concurrency: never
quotas), and applies `state.on_backend_error` when the store is unreachable: admit
(`fail_open`, counted) or 503 (`fail_closed`). Refusal reasons and admission kinds are
small fixed sets, used as metric labels.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.errors import ServiceUnavailable
from proxy.limits.headers import Report, header_names, put_rate_header, put_rate_headers
from proxy.state import BackendUnavailable, Change, Check, Quota, Rate, Release, Slot, Store, Verdict
from proxy.state.base import FIGURES, QUOTA, SLOT, Plan, verdicts

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
TOO_LARGE = Verdict(False, 0.0, 0.0, math.inf)  # a rate no request of this size can ever pass


@dataclass(slots=True)  # several per request: not frozen (see proxy/state/base.py)
class Limit:
    """One check of a request, with what it means: `reason` (a metric label), `dimension`
    (requests or tokens, for the rate headers) and `text` for the refusal message."""

    check: Check
    reason: str
    text: str
    dimension: str | None = None


Meaning = tuple[str, str, str | None]  # a limit's reason, text and dimension
# Per dimension: its header names, and its rows as (where their figures start, their limit as a header value).
HeaderRows = tuple[tuple[tuple[str, str, str], tuple[tuple[int, str], ...]], ...]


class LimitPlan:
    """Limits compiled once (per caller and route): the store's `Plan` and, per row, what it means. A request
    passes only its amounts (see `Plan`); check and verdict objects are made only for a refusal."""

    __slots__ = ("_headers", "meanings", "plan", "reported")

    def __init__(self, plan: Plan, meanings: Sequence[Meaning]):
        self.plan = plan
        self.meanings = tuple(meanings)
        # The rows the rate headers report: rates and slots with a dimension (dimension, row, limit).
        self.reported = tuple(
            (dimension, index, plan.rows[index][2])
            for index, (_, _, dimension) in enumerate(self.meanings)
            if dimension is not None and plan.rows[index][0] != QUOTA
        )
        self._headers: dict[str, HeaderRows] = {}

    def headers(self, protocol: str) -> HeaderRows:
        """Per dimension, in `reports`' order: its header names in `protocol`'s convention, where its first row's
        figures start and its limit as a header value, and its other rows alike; empty for a protocol without a
        convention."""
        found = self._headers.get(protocol)
        if found is None:
            groups: dict[str, list[tuple[int, str]]] = {}
            for dimension, index, limit in self.reported:
                groups.setdefault(dimension, []).append((index * FIGURES, str(limit)))
            found = self._headers[protocol] = tuple(
                (names, *rows[0], tuple(rows[1:]))
                for dimension, rows in groups.items()
                if (names := header_names(protocol, dimension)) is not None
            )
        return found

    @staticmethod
    def of(limits: Sequence[Limit]) -> tuple[LimitPlan, list[Any]]:
        """A plan made for one call, and its amounts."""
        plan, amounts = Plan.of([limit.check for limit in limits])
        return LimitPlan(plan, [(limit.reason, limit.text, limit.dimension) for limit in limits]), amounts

    def limit(self, index: int, amount: Any) -> Limit:
        return Limit(self.plan.check(index, amount), *self.meanings[index])


class Decision:
    """An admission's outcome: the plan it checked, its amounts and the store's figures (`FIGURES` per row);
    `results` pairs them as limits and verdicts (made when asked: a refusal)."""

    __slots__ = ("_results", "admitted", "amounts", "figures", "how", "limits")

    def __init__(
        self,
        admitted: bool,
        how: str,  # one of ADMITTED_HOW, or "refused"
        results: list[tuple[Limit, Verdict]] | None = None,
        limits: LimitPlan | None = None,
        amounts: Sequence[Any] = (),
        figures: list[float] | None = None,
    ):
        self.admitted = admitted
        self.how = how
        self._results = results
        self.limits = limits
        self.amounts = amounts
        self.figures = figures if figures is not None else []

    @property
    def results(self) -> list[tuple[Limit, Verdict]]:
        if self._results is not None:
            return self._results
        plan, amounts = self.limits, self.amounts
        if plan is None:
            return []
        return [(plan.limit(index, amounts[index]), verdict) for index, verdict in enumerate(verdicts(self.figures))]

    @property
    def denied(self) -> list[tuple[Limit, Verdict]]:
        return [(limit, verdict) for limit, verdict in self.results if not verdict.allowed]

    def binding(self) -> tuple[Limit, Verdict]:
        """The refusal that lasts longest: the request passes only once it has lifted."""
        return max(self.denied, key=lambda item: item[1].retry_after_s)

    def put_headers(self, target: MutableMapping[str, str], protocol: str, now: float | None = None) -> None:
        """`put_rate_headers` of `reports()`, straight from the figures (an admission's usual path)."""
        limits = self.limits
        if limits is None or self._results is not None:
            put_rate_headers(target, protocol, self.reports(), now)
            return
        groups = limits.headers(protocol)
        if not groups:
            return
        figures, openai = self.figures, protocol == "openai"
        for names, at, limit, others in groups:
            remaining = figures[at + 1]
            for other, other_limit in others:  # the tightest: the first with the fewest units left
                if figures[other + 1] < remaining:
                    at, limit, remaining = other, other_limit, figures[other + 1]
            put_rate_header(target, openai, names, limit, remaining, figures[at + 2], now)

    def reports(self) -> dict[str, Report]:
        """Per dimension, the tightest limit: the one with the fewest units left."""
        reports: dict[str, Report] = {}
        if self._results is not None:  # limits that were never sent to the store
            for limit, verdict in self._results:
                dimension, check = limit.dimension, limit.check
                if dimension is None or isinstance(check, Quota):
                    continue
                current = reports.get(dimension)
                if current is None or verdict.remaining < current[1]:
                    reports[dimension] = (check.limit, verdict.remaining, verdict.reset_s)
            return reports
        if self.limits is not None:
            figures = self.figures
            for dimension, index, limit in self.limits.reported:
                at = index * FIGURES
                remaining = figures[at + 1]
                current = reports.get(dimension)
                if current is None or remaining < current[1]:
                    reports[dimension] = (limit, remaining, figures[at + 2])
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
        plan, amounts = LimitPlan.of(limits)
        return await self.admit_plan(plan, amounts, wait_s, once_key)

    async def admit_plan(
        self, limits: LimitPlan, amounts: Sequence[Any], wait_s: float = 0.0, once_key: str | None = None
    ) -> Decision:
        """`admit` of compiled limits, with this request's amounts (one per row, see `Plan`)."""
        plan = limits.plan
        if not plan.rows:
            return Decision(True, "direct")
        for index, most in plan.rates:
            if amounts[index] > most:  # `too_large`
                refused = [(limits.limit(at, amounts[at]), TOO_LARGE) for at, most in plan.rates if amounts[at] > most]
                return Decision(False, "refused", refused)
        waited = 0.0
        while True:
            store = self._store()
            try:
                if store.immediate:
                    figures = store.admit_now(plan, amounts, self.clock())
                else:
                    figures = await store.admit(plan, amounts, self.clock(), once_key)
            except BackendUnavailable as exc:
                if exc.maybe_applied and once_key is not None:
                    store.cancel(plan.checks(amounts), once_key)
                if self.fail_closed:
                    raise ServiceUnavailable(
                        "the proxy cannot check its limits right now (its state backend is unreachable); "
                        "try again shortly",
                        code="limits_unavailable",
                        headers={"retry-after": "1"},
                    ) from None
                return Decision(True, "fail_open")
            if all(figures[::FIGURES]):
                return Decision(True, "waited" if waited else "direct", None, limits, amounts, figures)
            decision = Decision(False, "refused", None, limits, amounts, figures)
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
        if store.lease_s is None or decision.limits is None:  # nothing to renew (the memory store)
            return
        plan, amounts = decision.limits.plan, decision.amounts
        for index, row in enumerate(plan.rows):
            if row[0] == SLOT:
                store.hold(plan.check(index, amounts[index]))  # type: ignore[arg-type]

    async def settle_plan(self, plan: Plan, amounts: Sequence[Any], once_key: str) -> list[float] | None:
        """`settle` of `plan.changes(amounts)`; an immediate store applies them without their being made."""
        if not plan.rows:
            return []
        store = self._store()
        if store.immediate:
            return store.settle_now(plan, amounts, self.clock())
        return await self.settle(plan.changes(amounts), once_key)

    async def settle(self, changes: Sequence[Change], once_key: str) -> list[float] | None:
        """Corrections after the response, never refused and never lost: None when the store could not
        apply them yet (it keeps them and retries, applying them once per `once_key`)."""
        if not changes:
            return []
        store = self._store()
        if store.immediate:
            return store.adjust_now(changes, self.clock())
        if store.lease_s is not None:  # stop renewing what is released
            for change in changes:
                if isinstance(change, Release):
                    store.let_go(change.lease)
        try:
            return await store.settle(changes, self.clock(), once_key)
        except BackendUnavailable:  # a store without retries of its own
            return None

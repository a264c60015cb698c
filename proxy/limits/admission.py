"""A caller's rate limits and budget on one route, compiled once: what each request checks, in order.

Per caller (and route) the keys, reasons, refusal texts and limits are built once, and per kind of
request (the model pattern it matched, tokens estimated or not, the budget checked or not) the
limiter's plan (`LimitPlan`): a request passes only its amounts (`Variant.amounts`), and the
completion finds what to release and correct in the variant. Budget keys carry the period's label,
so a variant with a budget is compiled again when its period ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from proxy.limits.config import Budget, Limits
from proxy.limits.keys import day_period, month_period
from proxy.limits.limiter import LimitPlan, Meaning
from proxy.metrics import Metrics, adder, setter
from proxy.state.base import FIGURES, QUOTA, RATE, SLOT, Plan, Row

MINUTE = 60.0
# A key, reason, refusal text and limit of one limited dimension.
RateText = tuple[str, str, str, int]
RateTexts = tuple[RateText | None, RateText | None, RateText | None]  # requests, tokens, concurrency

# A budget's USD, key (less the period's label), reason, refusal text, period and its name, per period it limits.
BudgetTexts = tuple[tuple[float, str, str, str, Callable[[float], tuple[str, float]], str], ...]


_ONE, _TOKENS, _LEASE, _COST = range(4)  # where a row's amount comes from, per request (see `Variant.amounts`)
QuotaRow = tuple[int, str, float, float, str]  # a budget quota's row, key, USD, end of period and period name


class Variant:
    """A caller's limits for one kind of request (the model pattern it matched, tokens estimated or not, the
    budget checked or not), compiled once: the limiter's plan, where each row's amount comes from, and what
    the completion settles (slots released, token rates and budget quotas corrected: plans of their own, see
    `settlement`). Budget keys hold the period's label, so a variant with quotas serves only within the
    periods it was compiled in."""

    __slots__ = (
        "_pick",
        "_pick_quotas",
        "_pick_rates",
        "_pick_releases",
        "_releases",
        "_setters",
        "_with_quotas",
        "_with_rates",
        "gauges",
        "limits",
        "quotas",
        "since",
        "slots",
        "sources",
        "token_rates",
        "until",
    )

    def __init__(self) -> None:
        self.sources: list[int] = []
        self.token_rates: list[tuple[str, int]] = []  # key, limit
        self.slots: list[str] = []  # keys
        self.quotas: tuple[QuotaRow, ...] = ()
        # Per quota, in order: where its remaining USD is in the admission's figures, its USD, and its period.
        self.gauges: tuple[tuple[int, float, str], ...] = ()
        self._setters: tuple[Callable[[float], None], ...] | None = None
        self.since, self.until = -math.inf, math.inf
        self.limits = LimitPlan(Plan(()), ())
        self._pick: Callable[[tuple[Any, ...]], Sequence[Any]] = tuple
        self._releases = self._with_quotas = self._with_rates = Plan(())
        self._pick_releases = self._pick_quotas = self._pick_rates = _picker([])

    def amounts(self, tokens: int, lease: str, cost_usd: float) -> Sequence[Any]:
        """One amount per row: a requests rate's 1, a token rate's estimate, the slot's lease, the estimated cost."""
        return self._pick((1, tokens, lease, cost_usd))

    def settlement(
        self, lease: str, corrected: bool, token_delta: float = 0, cost_delta: float = 0.0
    ) -> tuple[Plan, tuple[Any, ...]]:
        """What the completion settles, as a plan of changes (`Plan.changes`) and its amounts: the slots'
        releases, then, if `corrected`, the token rates' corrections (unless `token_delta` is 0) and the budget
        quotas' (last, so the quotas' new totals are the results' last)."""
        values = (lease, token_delta, cost_delta)  # a settlement's amounts are picked from these (see `compiled`)
        if not corrected:
            return self._releases, self._pick_releases(values)
        if not token_delta:
            return self._with_quotas, self._pick_quotas(values)
        return self._with_rates, self._pick_rates(values)

    def setters(self, admission: CallerAdmission) -> tuple[Callable[[float], None], ...]:
        """Per quota, the setter of the budget gauge of `admission`'s profile for its period (found at the first
        admission: a gauge's series appears once there is something to show)."""
        found = self._setters
        if found is None:
            found = self._setters = tuple(admission.gauge(period) for _, _, period in self.gauges)
        return found

    def compiled(self, rows: list[Row], meanings: list[Meaning]) -> Variant:
        self.limits = LimitPlan(Plan(rows), meanings)
        sources = self.sources
        self._pick = _picker(sources)
        slots = [row for row, source in zip(rows, sources, strict=True) if source == _LEASE]
        rates = [row for row, source in zip(rows, sources, strict=True) if source == _TOKENS]
        quotas = [row for row, source in zip(rows, sources, strict=True) if source == _COST]
        self._releases = Plan(slots)
        self._with_quotas = Plan(slots + quotas)
        self._with_rates = Plan(slots + rates + quotas)
        # A settlement's amounts, from (lease, token delta, cost delta): the slots' lease, the rates' or quotas' delta.
        self._pick_releases = _picker([0] * len(slots))
        self._pick_quotas = _picker([0] * len(slots) + [2] * len(quotas))
        self._pick_rates = _picker([0] * len(slots) + [1] * len(rates) + [2] * len(quotas))
        return self


def _picker(sources: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A tuple of the items at `sources` of a tuple of values."""
    if len(sources) > 1:
        return itemgetter(*sources)  # taken in C
    if sources:
        (source,) = sources
        return lambda values: (values[source],)
    return lambda values: ()


class CallerAdmission:
    """One caller's limits on one route, compiled: its own, per model pattern (first match applies), its
    budget, the route's; its variants, and its profile's admission counter and budget gauges, found once."""

    __slots__ = (
        "_admitted",
        "_gauges",
        "_variants",
        "budget",
        "metrics",
        "own",
        "per_model",
        "profile",
        "route",
        "slot_ttl_s",
    )

    def __init__(
        self,
        own: RateTexts | None,
        per_model: tuple[tuple[str, RateTexts], ...],
        budget: BudgetTexts,
        route: RateTexts | None,
        slot_ttl_s: float,
        metrics: Metrics | None = None,
        profile: str = "default",
    ):
        self.own = own
        self.per_model = per_model
        self.budget = budget
        self.route = route  # the route's own limits (stages.ratelimit.route_limit)
        self.slot_ttl_s = slot_ttl_s
        self.metrics = metrics
        self.profile = profile
        self._variants: dict[tuple[int, bool, bool], Variant] = {}
        self._admitted: Any = None
        self._gauges: dict[str, Any] = {}

    def variant(self, model_at: int, tokens: bool, budget: bool, now: float) -> Variant:
        """The compiled limits for a request that matched the `model_at`th model pattern (-1: none), with
        tokens estimated or not, its budget checked (at `now`) or not."""
        memo = (model_at, tokens, budget)
        found = self._variants.get(memo)
        if found is None or not found.since <= now < found.until:
            found = self._variants[memo] = self._compile(model_at, tokens, budget, now)
        return found

    def _compile(self, model_at: int, tokens: bool, budget: bool, now: float) -> Variant:
        """The rows in the order admission has always checked them: the caller's own, its model pattern's,
        the route's, then the budget's (last: their settlement's results are the last, see `settlement`)."""
        variant = Variant()
        rows: list[Row] = []
        meanings: list[Meaning] = []
        ttl_s = self.slot_ttl_s

        def add(row: Row, meaning: Meaning, source: int) -> None:
            rows.append(row)
            meanings.append(meaning)
            variant.sources.append(source)

        for texts in (
            self.own,
            self.per_model[model_at][1] if model_at >= 0 else None,
            self.route,
        ):
            if texts is None:
                continue
            rpm, tpm, conc = texts
            if rpm is not None:
                add((RATE, rpm[0], rpm[3], MINUTE, False), (rpm[1], rpm[2], "requests"), _ONE)
            if tpm is not None and tokens:
                add((RATE, tpm[0], tpm[3], MINUTE, False), (tpm[1], tpm[2], "tokens"), _TOKENS)
                variant.token_rates.append((tpm[0], tpm[3]))
            if conc is not None:
                add((SLOT, conc[0], conc[3], ttl_s, False), (conc[1], conc[2], None), _LEASE)
                variant.slots.append(conc[0])
        if budget and self.budget:
            quotas: list[QuotaRow] = []
            variant.since = now
            for usd, key, reason, text, period, period_name in self.budget:
                label, end = period(now)
                quotas.append((len(rows), key + label, usd, end, period_name))
                add((QUOTA, key + label, usd, end, False), (reason, text, None), _COST)
                variant.until = min(variant.until, end)
            variant.quotas = tuple(quotas)
            variant.gauges = tuple((row * FIGURES + 1, usd, period) for row, _, usd, _, period in quotas)
        return variant.compiled(rows, meanings)

    def admitted(self) -> None:
        """Counts a direct admission."""
        add = self._admitted
        if add is None:
            metrics = self.metrics
            assert metrics is not None
            add = self._admitted = adder(metrics.child(metrics.limit_admissions, self.profile, "direct"))
        add(1)

    def gauge(self, period: str) -> Callable[[float], None]:
        """Sets the budget gauge of this caller's profile for `period`."""
        found = self._gauges.get(period)
        if found is None:
            metrics = self.metrics
            assert metrics is not None
            found = self._gauges[period] = setter(metrics.child(metrics.budget_remaining_usd, self.profile, period))
        return found


def rate_texts(limits: Limits, key: str, scope: str, kind: str) -> RateTexts:
    """What a set of limits checks for one key: per limit its key, reason, refusal text and limit."""
    rpm, tpm, conc = limits.requests_per_minute, limits.tokens_per_minute, limits.concurrent
    return (
        None if rpm is None else (f"{key}:rpm", f"{kind}requests", f"{scope}: {rpm} requests per minute", rpm),
        None if tpm is None else (f"{key}:tpm", f"{kind}tokens", f"{scope}: {tpm} tokens per minute", tpm),
        None if conc is None else (f"{key}:conc", f"{kind}concurrent", f"{scope}: {conc} requests in flight", conc),
    )


def budget_texts(budget: Budget, caller_key: str, name: str) -> BudgetTexts:
    """What a caller's budget checks, per period it limits."""
    return tuple(
        (
            usd,
            f"{caller_key}:usd:{period[0]}:",
            reason,
            f"the budget of ${usd:.2f} per {period} of caller '{name}'",
            when,
            period,
        )
        for usd, period, reason, when in (
            (budget.usd_per_day, "day", "budget_day", day_period),
            (budget.usd_per_month, "month", "budget_month", month_period),
        )
        if usd is not None
    )

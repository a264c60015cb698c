"""Per-caller rate limits, concurrency caps and spend budgets: admitted before the upstream, corrected after.

Limits come from the caller's profile (`callers.<profile>.rate_limit`, `.budget`), each
caller name counted on its own, plus optional limits per model pattern and per route
(`stages.ratelimit.route_limit`). Every check of a request is one store call, made as
early as possible: before the body is read when nothing in it is needed, else once it
has arrived (token estimate, model, cost). Tokens and spend are admitted on an estimate
and corrected in `on_complete` with the real usage and cost; the concurrency slot is
released there too, exactly once, whether the caller stayed or went away.

Refusals are 429 in the route protocol's shape with `retry-after` and the provider's
rate-limit headers (which successful responses carry too); a spent budget is 429
`insufficient_quota`, which SDKs are told not to retry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, ClassVar

from proxy.errors import ProxyError, QuotaExceeded, RateLimited, ServiceUnavailable
from proxy.exchange import Exchange, Reply
from proxy.limits.config import Budget, Limits, RateLimitStageConfig
from proxy.limits.context import ANONYMOUS, CallerPlan, LimitsContext, limits_context
from proxy.limits.estimate import Estimate, actual_cost, actual_tokens, estimate
from proxy.limits.headers import put_rate_headers, rate_headers, retry_headers, rfc3339
from proxy.limits.keys import day_period, month_period, new_lease, part
from proxy.limits.limiter import Decision, Limit
from proxy.pipeline import Stage, StageFactory
from proxy.policy.schema import Route
from proxy.state import Quota, QuotaDelta, Rate, RateDelta, Release, Slot

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext

MINUTE = 60.0
MEMO_ENTRIES = 4096  # callers whose compiled admission a route's factory remembers (then it starts over)
# A key, reason, refusal text and limit of one limited dimension.
_RateText = tuple[str, str, str, int]
_RateTexts = tuple[Limit | None, _RateText | None, _RateText | None]
# Without leases (the memory store), a slot outlives the route's deadline by this much if its release never came.
LEASE_MARGIN_S = 60.0


class RateLimitStage(Stage):
    name: ClassVar[str] = "ratelimit"

    def __init__(self, factory: RateLimitFactory):
        super().__init__(factory.mode)
        self._f = factory
        self._plan: CallerPlan | None = None
        self._profile = "default"
        self._deferred = False
        self._decision: Decision | None = None
        self._estimate: Estimate | None = None
        self._releases: list[Release] = []  # slots this request may hold: released once, in on_complete
        self._token_rates: list[Rate] = []  # the admission's token rates and budget quotas, corrected in on_complete
        self._quotas: list[tuple[Quota, str]] = []  # with the period each is for (day, month)
        self._id = ""  # the admission's own id: its leases and the key that makes its settlement apply once
        self._once_key = ""  # that key
        self._settled = False

    # ---- admission

    async def on_request_headers(self, ex: Exchange) -> Reply | None:
        f = self._f
        self._profile = ex.caller.profile if ex.caller is not None else "default"
        self._plan = f.shared.plans.get(self._profile)
        if self._plan is None and f.route_limit is None:
            return None
        needs_body = (self._plan is not None and self._plan.needs_body) or f.route_needs_body
        if needs_body and ex.protocol.parses_json:
            self._deferred = True  # one admission, once the body is here
            return None
        await self._admit(ex, None)
        return None

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        if self._deferred:
            self._deferred = False
            f = self._f
            await self._admit(ex, estimate(ex, f.config.default_max_tokens, f.shared.pricing))
        return None

    async def _admit(self, ex: Exchange, guess: Estimate | None) -> None:
        f = self._f
        limits = self._limits(ex, guess)
        if not limits:
            return
        metrics = f.shared.metrics
        wait_s = f.config.wait_ms / 1000 if self.enforcing else 0.0
        try:
            decision = await f.shared.limiter.admit(limits, wait_s, self._once_key)
        except ServiceUnavailable:  # the slot may have been taken by a call that then timed out: still released
            metrics.limit_refusals.labels(self._profile, "backend_unavailable", self.mode).inc()
            raise
        if not decision.admitted:
            self._releases = []  # the store refused: it took nothing
        self._decision = decision
        if decision.admitted:
            f.shared.limiter.hold(decision)
            metrics.child(metrics.limit_admissions, self._profile, decision.how).inc()
            if decision.how != "direct":
                self.decide(ex, f"admitted:{decision.how}")
            self._estimate = guess
            self._budget_gauge_from(decision)
            return
        limit, _ = decision.binding()
        metrics.limit_refusals.labels(self._profile, limit.reason, self.mode).inc()
        raise self._refusal(ex, decision)

    def _limits(self, ex: Exchange, guess: Estimate | None) -> list[Limit]:
        f, plan = self._f, self._plan
        tokens = guess.tokens if guess is not None else 0
        lease = self._id = new_lease()
        self._once_key = f"{f.shared.prefix}once:{lease}"
        limits: list[Limit] = []
        caller = None
        if plan is not None:
            caller = f.admission(plan, ex.caller.name if ex.caller is not None else ANONYMOUS)
            if caller.own is not None:
                self._rates(caller.own, tokens, lease, limits)
            model = guess.model if guess is not None else None
            if model is not None:
                for pattern, texts in caller.per_model:
                    if fnmatchcase(model, pattern):
                        self._rates(texts, tokens, lease, limits)
                        break
        if f.route_texts is not None:
            self._rates(f.route_texts, tokens, lease, limits)
        if caller is not None and caller.budget and guess is not None:
            cost, now = guess.cost_usd, f.shared.limiter.clock()
            for usd, key, reason, text, period, period_name in caller.budget:
                label, end = period(now)
                quota = Quota(key + label, usd, cost, end)
                self._quotas.append((quota, period_name))
                limits.append(Limit(quota, reason, text))
        return limits

    def _rates(self, texts: _RateTexts, tokens: int, lease: str, out: list[Limit]) -> None:
        """Appends one set of limits' checks: the requests limit is built once, tokens and the slot per request."""
        rpm, tpm, conc = texts
        if rpm is not None:
            out.append(rpm)
        if tpm is not None and tokens > 0:
            rate = Rate(tpm[0], tpm[3], MINUTE, tokens)
            self._token_rates.append(rate)
            out.append(Limit(rate, tpm[1], tpm[2], "tokens"))
        if conc is not None:
            slot = Slot(conc[0], conc[3], lease, self._f.shared.limiter.lease_s or self._f.lease_ttl_s)
            self._releases.append(Release(slot.key, lease))  # before the store call: a cancelled call may have taken it
            out.append(Limit(slot, conc[1], conc[2]))

    def _refusal(self, ex: Exchange, decision: Decision) -> ProxyError:
        limit, verdict = decision.binding()
        headers = rate_headers(ex.protocol.name, decision.reports())
        if math.isinf(verdict.retry_after_s):
            headers["x-should-retry"] = "false"
            cost = limit.check.cost if isinstance(limit.check, Rate) else 0
            return RateLimited(
                f"This request needs about {cost:.0f} tokens (prompt and max_tokens), more than {limit.text} "
                "allows at once, so it can never pass: lower max_tokens or shorten the prompt.",
                code="rate_limit_exceeded",
                headers=headers,
            )
        if isinstance(limit.check, Quota):
            headers.update(retry_headers(verdict.retry_after_s, retry=False))
            return QuotaExceeded(
                f"You exceeded {limit.text}; it renews at {rfc3339(verdict.retry_after_s)}.",
                code="insufficient_quota",
                headers=headers,
            )
        headers.update(retry_headers(verdict.retry_after_s))
        return RateLimited(
            f"Rate limit reached for {limit.text}. Please retry in {max(verdict.retry_after_s, 0.001):.3f}s.",
            code="rate_limit_exceeded",
            headers=headers,
        )

    # ---- response and completion

    def on_response_headers(self, ex: Exchange) -> None:
        decision = self._decision
        if self.enforcing and decision is not None and decision.admitted:
            reports = decision.reports()
            if reports:
                put_rate_headers(ex.response_headers, ex.protocol.name, reports)

    async def on_complete(self, ex: Exchange) -> None:
        if self._settled:
            return
        self._settled = True
        changes: list[Release | RateDelta | QuotaDelta] = list(self._releases)
        self._releases = []
        decision, guess = self._decision, self._estimate
        quotas: list[tuple[int, Quota, str]] = []
        # `results` is empty when admitted without the store (fail_open): then nothing was charged to correct.
        if decision is not None and decision.admitted and decision.results and guess is not None:
            f = self._f
            token_delta = actual_tokens(ex, guess.tokens) - guess.tokens
            cost_delta = actual_cost(ex, guess, f.shared.pricing) - guess.cost_usd
            if token_delta:
                for rate in self._token_rates:
                    changes.append(RateDelta(rate.key, rate.limit, rate.period_s, token_delta))
            for quota, period in self._quotas:
                quotas.append((len(changes), quota, period))
                changes.append(QuotaDelta(quota.key, cost_delta, quota.expires_at))
        shared = self._f.shared
        results = await shared.limiter.settle(changes, self._once_key)
        if results:
            metrics = shared.metrics
            for index, quota, period in quotas:
                if math.isnan(results[index]):
                    continue  # applied by an earlier attempt
                metrics.child(metrics.budget_remaining_usd, self._profile, period).set(
                    max(0.0, quota.limit - results[index])
                )

    def _budget_gauge_from(self, decision: Decision) -> None:
        """The budget quotas are the admission's last checks (see `_limits`)."""
        if self._quotas:
            metrics = self._f.shared.metrics
            for (_, period), (_, verdict) in zip(self._quotas, decision.results[-len(self._quotas) :], strict=False):
                metrics.child(metrics.budget_remaining_usd, self._profile, period).set(verdict.remaining)


# A budget's USD, key (less the period's label), reason, refusal text, period and its name, per period it limits.
_BudgetTexts = tuple[tuple[float, str, str, str, Callable[[float], tuple[str, float]], str], ...]


@dataclass(frozen=True, slots=True)
class CallerAdmission:
    """One caller's limits, compiled: its own, per model pattern (first match applies), its budget."""

    own: _RateTexts | None
    per_model: tuple[tuple[str, _RateTexts], ...]
    budget: _BudgetTexts


def rate_texts(limits: Limits, key: str, scope: str, kind: str) -> _RateTexts:
    """What a set of limits checks for one key: the requests limit whole, the others' keys, reasons, texts."""
    rpm, tpm, conc = limits.requests_per_minute, limits.tokens_per_minute, limits.concurrent
    return (
        None
        if rpm is None
        else Limit(
            Rate(f"{key}:rpm", rpm, MINUTE, 1), f"{kind}requests", f"{scope}: {rpm} requests per minute", "requests"
        ),
        None if tpm is None else (f"{key}:tpm", f"{kind}tokens", f"{scope}: {tpm} tokens per minute", tpm),
        None if conc is None else (f"{key}:conc", f"{kind}concurrent", f"{scope}: {conc} requests in flight", conc),
    )


def budget_texts(budget: Budget, caller_key: str, name: str) -> _BudgetTexts:
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


class RateLimitFactory(StageFactory):
    stage = RateLimitStage

    def __init__(self, config: RateLimitStageConfig, route: Route, shared: LimitsContext, lease_ttl_s: float):
        super().__init__(config.mode)
        self.config = config
        self.shared = shared
        self.label = route.label
        self.route_limit = config.route_limit if config.route_limit and not config.route_limit.empty else None
        self.route_key = f"{shared.prefix}r:{part(route.label)}"
        self.route_needs_body = self.route_limit is not None and self.route_limit.tokens_per_minute is not None
        self.lease_ttl_s = lease_ttl_s
        self.route_texts = (
            None
            if self.route_limit is None
            else rate_texts(self.route_limit, self.route_key, f"route '{self.label}'", "route_")
        )
        self._admissions: dict[tuple[int, str], CallerAdmission] = {}

    def admission(self, plan: CallerPlan, name: str) -> CallerAdmission:
        """What one caller's admission checks, compiled once per caller (up to `MEMO_ENTRIES`): keys,
        reasons, refusal texts, the requests limits whole. A reload builds a new factory, so it starts over."""
        memo = (id(plan), name)  # `plan` lives in the policy this factory was built from
        found = self._admissions.get(memo)
        if found is None:
            if len(self._admissions) >= MEMO_ENTRIES:
                self._admissions.clear()
            key, scope = f"{self.shared.prefix}c:{part(name)}", f"caller '{name}'"
            found = self._admissions[memo] = CallerAdmission(
                None if plan.limits is None else rate_texts(plan.limits, key, scope, ""),
                tuple(
                    (
                        pattern,
                        rate_texts(limits, f"{key}:m:{part(pattern)}", f"{scope} on models '{pattern}'", "model_"),
                    )
                    for pattern, limits in plan.per_model
                ),
                () if plan.budget is None else budget_texts(plan.budget, key, name),
            )
        return found


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    config: RateLimitStageConfig = ctx.stage_config(route, "ratelimit")
    if config.mode == "off":
        return None
    shared = limits_context(ctx)
    if not shared.plans and (config.route_limit is None or config.route_limit.empty):
        return None  # nothing limited anywhere: no stage, no cost
    deadline = ctx.policy.upstreams[route.upstream].timeouts.total_s
    return RateLimitFactory(config, route, shared, deadline + config.wait_ms / 1000 + LEASE_MARGIN_S)

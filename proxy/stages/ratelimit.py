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
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, ClassVar

from proxy.errors import ProxyError, QuotaExceeded, RateLimited, ServiceUnavailable
from proxy.exchange import Exchange, Reply
from proxy.limits.admission import CallerAdmission, Variant, budget_texts, rate_texts
from proxy.limits.config import RateLimitStageConfig
from proxy.limits.context import ANONYMOUS, CallerPlan, LimitsContext, limits_context
from proxy.limits.estimate import Estimate, actual_cost, actual_tokens, estimate
from proxy.limits.headers import rate_headers, retry_headers, rfc3339
from proxy.limits.keys import new_lease, part
from proxy.limits.limiter import Decision
from proxy.pipeline import Stage, StageFactory
from proxy.policy.schema import Route
from proxy.state import Quota, Rate

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext

MEMO_ENTRIES = 4096  # callers whose compiled admission a route's factory remembers (then it starts over)
# Without leases (the memory store), a slot outlives the route's deadline by this much if its release never came.
LEASE_MARGIN_S = 60.0


class RateLimitStage(Stage):
    name: ClassVar[str] = "ratelimit"

    # A request's state: these class-level values stand until the request sets its own (a stage per request).
    _plan: CallerPlan | None = None
    _profile = "default"
    _deferred = False
    _decision: Decision | None = None
    _estimate: Estimate | None = None
    _admission: CallerAdmission | None = None
    _variant: Variant | None = None  # what the admission checked: its slots are released in on_complete
    _id = ""  # the admission's own id: its leases and the key that makes its settlement apply once
    _once_key = ""  # that key
    _settled = False

    def __init__(self, factory: RateLimitFactory):
        super().__init__(factory.mode)
        self._f = factory

    # ---- admission

    async def on_request_headers(self, ex: Exchange) -> Reply | None:
        if not self._caller(ex):
            return None
        plan = self._plan
        if ((plan is not None and plan.needs_body) or self._f.route_needs_body) and ex.protocol.parses_json:
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

    def _caller(self, ex: Exchange) -> bool:
        """Finds the caller's profile and plan; False when nothing limits its requests here."""
        self._profile = ex.caller.profile if ex.caller is not None else "default"
        self._plan = self._f.shared.plans.get(self._profile)
        return self._plan is not None or self._f.route_limit is not None

    async def _admit(self, ex: Exchange, guess: Estimate | None) -> None:
        f = self._f
        variant, amounts = self._limits(ex, guess)
        if variant is None:
            return
        try:
            decision = await f.shared.limiter.admit_plan(variant.limits, amounts, f.wait_s, self._once_key)
        except ServiceUnavailable:  # the slot may have been taken by a call that then timed out: still released
            metrics = f.shared.metrics
            metrics.limit_refusals.labels(self._profile, "backend_unavailable", self.mode).inc()
            raise
        self._decision = decision
        if decision.admitted:
            if f.holds:
                f.shared.limiter.hold(decision)
            admission = self._admission
            if decision.how == "direct" and admission is not None:
                admission.admitted()
            else:
                metrics = f.shared.metrics
                metrics.child(metrics.limit_admissions, self._profile, decision.how).inc()
            if decision.how != "direct":
                self.decide(ex, f"admitted:{decision.how}")
            self._estimate = guess
            figures = decision.figures
            if variant.gauges and figures and admission is not None:
                for (at, _, _), set_gauge in zip(variant.gauges, variant.setters(admission), strict=True):
                    set_gauge(figures[at])
            return
        self._variant = None  # the store refused: it took nothing
        limit, _ = decision.binding()
        f.shared.metrics.limit_refusals.labels(self._profile, limit.reason, self.mode).inc()
        raise self._refusal(ex, decision)

    def _limits(self, ex: Exchange, guess: Estimate | None) -> tuple[Variant | None, Sequence[Any]]:
        """This request's compiled limits and its amounts (see `Variant.amounts`)."""
        f, plan = self._f, self._plan
        tokens = guess.tokens if guess is not None else 0
        model_at = -1
        if plan is not None:
            name = ex.caller.name if ex.caller is not None else ANONYMOUS
            admission = self._admission = f.admission(plan, name, self._profile)
            model = guess.model if guess is not None else None
            if model is not None and admission.per_model:
                for at, (pattern, _) in enumerate(admission.per_model):
                    if fnmatchcase(model, pattern):
                        model_at = at
                        break
        else:
            admission = f.route_only
        budget = bool(admission.budget) and guess is not None
        now = f.shared.limiter.clock() if budget else 0.0
        variant = admission.variant(model_at, tokens > 0, budget, now)
        if not variant.limits.plan.rows:
            return None, ()
        lease = self._id = new_lease()
        self._once_key = f.once_prefix + lease
        self._variant = variant  # before the store call: a cancelled call may have taken its slots
        return variant, variant.amounts(tokens, lease, guess.cost_usd if guess is not None else 0.0)

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
        if self.mode == "enforce" and decision is not None and decision.admitted:
            decision.put_headers(ex.response_headers, ex.protocol.name)

    async def on_complete(self, ex: Exchange) -> None:
        if self._settled:
            return
        self._settled = True
        variant = self._variant
        if variant is None:  # nothing taken
            return
        self._variant = None
        decision, guess = self._decision, self._estimate
        f = self._f
        # `figures` is empty when admitted without the store (fail_open): then nothing was charged to correct.
        corrected = decision is not None and decision.admitted and bool(decision.figures) and guess is not None
        if corrected:
            assert guess is not None
            tokens = guess.tokens
            token_delta = actual_tokens(ex, tokens) - tokens
            cost_delta = actual_cost(ex, guess, f.shared.pricing) - guess.cost_usd
            plan, amounts = variant.settlement(self._id, True, token_delta, cost_delta)
        else:
            plan, amounts = variant.settlement(self._id, False)
        results = await f.shared.limiter.settle_plan(plan, amounts, self._once_key)
        gauges, admission = variant.gauges, self._admission
        if results and corrected and gauges and admission is not None:
            # The quotas' new totals are the results' last (see `Variant.settlement`).
            totals = results[len(results) - len(gauges) :]
            for (_, usd, _), set_gauge, total in zip(gauges, variant.setters(admission), totals, strict=False):
                if not math.isnan(total):  # NaN: applied by an earlier attempt
                    set_gauge(max(0.0, usd - total))


class BodyRateLimitStage(RateLimitStage):
    """On a route where every admission waits for the body (see `RateLimitFactory.waits_for_body`): no
    request-header hook, which the chain then skips; the caller is looked up with the body."""

    on_request_headers = Stage.on_request_headers

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        if self._caller(ex):
            f = self._f
            await self._admit(ex, estimate(ex, f.config.default_max_tokens, f.shared.pricing))
        return None


class RateLimitFactory(StageFactory):
    stage = RateLimitStage

    def __init__(
        self,
        config: RateLimitStageConfig,
        route: Route,
        shared: LimitsContext,
        lease_ttl_s: float,
        speaks_llm: bool = False,
    ):
        super().__init__(config.mode)
        self.config = config
        self.shared = shared
        self.label = route.label
        self.route_limit = config.route_limit if config.route_limit and not config.route_limit.empty else None
        self.route_key = f"{shared.prefix}r:{part(route.label)}"
        self.once_prefix = f"{shared.prefix}once:"  # and a lease: the key an admission is applied once under
        self.route_needs_body = self.route_limit is not None and self.route_limit.tokens_per_minute is not None
        self.lease_ttl_s = lease_ttl_s
        self.wait_s = config.wait_ms / 1000 if config.mode == "enforce" else 0.0  # a shadow stage never waits
        self.route_texts = (
            None
            if self.route_limit is None
            else rate_texts(self.route_limit, self.route_key, f"route '{self.label}'", "route_")
        )
        self._admissions: dict[tuple[int, str], CallerAdmission] = {}
        self.holds = shared.limiter.lease_s is not None  # a store with leases renews them while a response lives
        self.slot_ttl_s = shared.limiter.lease_s or lease_ttl_s
        # Callers whose profile limits nothing: the route's limits.
        self.route_only = CallerAdmission(None, (), (), self.route_texts, self.slot_ttl_s)
        if self.waits_for_body(speaks_llm):
            self.stage = BodyRateLimitStage

    def waits_for_body(self, speaks_llm: bool) -> bool:
        """Every admission on this route is made once the body is here: its protocol parses the body (an LLM
        protocol), and the route's limits, if any, count tokens, or else every caller profile with limits
        needs the body."""
        if not speaks_llm:
            return False
        if self.route_limit is not None:
            return self.route_needs_body
        return all(plan.needs_body for plan in self.shared.plans.values())

    def admission(self, plan: CallerPlan, name: str, profile: str = "default") -> CallerAdmission:
        """What one caller (of `profile`, whose plan `plan` is) checks, compiled once per caller (up to
        `MEMO_ENTRIES`): keys, reasons, refusal texts, limits. A reload builds a new factory, so it starts over."""
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
                self.route_texts,
                self.slot_ttl_s,
                self.shared.metrics,
                profile,
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
    lease_ttl_s = deadline + config.wait_ms / 1000 + LEASE_MARGIN_S
    return RateLimitFactory(config, route, shared, lease_ttl_s, ctx.speaks_llm(route))

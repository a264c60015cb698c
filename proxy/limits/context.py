"""What the limit stages share for one policy load: caller plans, the limiter, key prefix, prices.

Built once per policy (`BuildContext.shared`), over the process-wide store in
`Services.state`, which outlives reloads so counts carry over them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxy.limits.config import Budget, Limits
from proxy.limits.limiter import Limiter
from proxy.metrics import Metrics
from proxy.policy.schema import Policy, Pricing
from proxy.services import Services
from proxy.state import MemoryStore, Store

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext

log = logging.getLogger("agent_proxy.limits")
ANONYMOUS = "anonymous"  # the caller on routes without auth; it gets the `default` profile


@dataclass(frozen=True, slots=True)
class CallerPlan:
    """A profile's limits, ready to apply: its own, per model pattern, and its budget."""

    limits: Limits | None
    per_model: tuple[tuple[str, Limits], ...]
    budget: Budget | None
    # Token estimates, model names and costs come from the body: admit once it has arrived (read per request).
    needs_body: bool = field(init=False)

    def __post_init__(self) -> None:
        tokens = self.limits is not None and self.limits.tokens_per_minute is not None
        object.__setattr__(self, "needs_body", tokens or bool(self.per_model) or self.budget is not None)


def _plan(policy: Policy) -> dict[str, CallerPlan]:
    plans: dict[str, CallerPlan] = {}
    for name, profile in policy.callers.items():
        rate = profile.rate_limit
        own = (
            None
            if rate is None
            else Limits(
                requests_per_minute=rate.requests_per_minute,
                tokens_per_minute=rate.tokens_per_minute,
                concurrent=rate.concurrent,
            )
        )
        per_model = tuple(rate.per_model.items()) if rate is not None else ()
        budget = profile.budget if profile.budget is not None and not profile.budget.empty else None
        if (own is not None and not own.empty) or per_model or budget is not None:
            plans[name] = CallerPlan(own if own is not None and not own.empty else None, per_model, budget)
    return plans


def store_of(services: Services) -> Store:
    """The process-wide store; an in-memory one if the app did not open one (tests compiling a policy)."""
    if services.state is None:
        services.state = MemoryStore()
    return services.state


@dataclass(slots=True)
class LimitsContext:
    services: Services
    limiter: Limiter
    prefix: str
    pricing: Mapping[str, Pricing]
    plans: dict[str, CallerPlan]

    @property
    def metrics(self) -> Metrics:
        return self.services.metrics


def limits_context(ctx: BuildContext) -> LimitsContext:
    def make() -> LimitsContext:
        policy, services = ctx.policy, ctx.services
        opened = getattr(services.state, "opened_from", None)
        if opened is not None and opened != policy.state.model_dump(exclude={"on_backend_error"}):
            log.warning("the policy's `state` backend settings changed; they take effect at the next restart")
        store = store_of(services)  # opened by the app before it compiles a policy, and kept over reloads
        limiter = Limiter(lambda: store, fail_closed=policy.state.on_backend_error == "fail_closed")
        return LimitsContext(services, limiter, policy.state.key_prefix, policy.pricing, _plan(policy))

    return ctx.shared("limits", make)

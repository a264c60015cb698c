"""Agent runs: limits per run (requests, tokens, USD) and a loop guard, before the upstream.

A run is found from `x-agent-run-id` or the conversation's stable prefix
(proxy/limits/run_identity.py) and counted per caller, so runs of different callers never mix.
Its counters expire once the run has been idle for `idle_ttl_s`. The loop guard refuses
the request once the same request, or the same tool call, has already occurred
`max_repeats` times within `window_s`: that is what stops a runaway agent from burning
a day's budget in minutes. Its own `mode` can keep it in shadow while run limits enforce.
Refusals are 429 with a message that says what happened, marked not to be retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from proxy.errors import RateLimited, ServiceUnavailable
from proxy.exchange import Exchange, Reply
from proxy.limits.config import RunsConfig
from proxy.limits.context import ANONYMOUS, LimitsContext, limits_context
from proxy.limits.estimate import Estimate, actual_cost, actual_tokens, estimate
from proxy.limits.headers import retry_headers
from proxy.limits.keys import new_lease, part
from proxy.limits.limiter import Limit
from proxy.limits.run_identity import request_hash, run_id, tool_call_hashes
from proxy.pipeline import Stage, StageFactory
from proxy.policy.schema import Route
from proxy.state import Quota, QuotaDelta, Rate

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext

LOOP_REASONS = frozenset({"loop_request", "loop_tool_call"})


class RunsStage(Stage):
    name: ClassVar[str] = "runs"

    def __init__(self, factory: RunsFactory):
        super().__init__(factory.mode)
        self._f = factory
        self._taken: list[Quota] = []
        self._estimate: Estimate | None = None
        self._once_key = ""  # this admission in the store: undone if lost, settled once
        self._settled = False

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        f = self._f
        body = ex.request_json if ex.has_llm_body else None
        run = run_id(ex, body)
        if run is None:
            return None
        name = ex.caller.name if ex.caller is not None else ANONYMOUS
        profile = ex.caller.profile if ex.caller is not None else "default"
        key = f"{f.shared.prefix}run:{part(name)}:{run}"
        guess = estimate(ex, f.default_max_tokens, f.shared.pricing)
        limits = self._run_limits(key, guess)
        loops = self._loop_limits(ex, key, body)
        guard = f.config.loop_guard
        loops_shadowed = self.enforcing and guard is not None and guard.mode == "shadow"
        self._once_key = f"{f.shared.prefix}once:{new_lease()}"
        try:
            decision = await f.shared.limiter.admit(limits if loops_shadowed else limits + loops, 0.0, self._once_key)
            if loops_shadowed and loops and decision.admitted:
                await self._shadow_loops(ex, profile, loops)
        except ServiceUnavailable:
            f.shared.metrics.limit_refusals.labels(profile, "backend_unavailable", self.mode).inc()
            raise
        if decision.admitted:
            if decision.how == "direct":
                self._taken = [limit.check for limit in limits if isinstance(limit.check, Quota)]
                self._estimate = guess
            return None
        limit, verdict = decision.binding()
        f.shared.metrics.limit_refusals.labels(profile, limit.reason, self.mode).inc()
        code = "agent_loop_detected" if limit.reason in LOOP_REASONS else "run_limit_exceeded"
        raise RateLimited(limit.text, code=code, headers=retry_headers(verdict.retry_after_s, retry=False))

    async def _shadow_loops(self, ex: Exchange, profile: str, loops: list[Limit]) -> None:
        """The loop guard in shadow while run limits enforce: a loop is recorded and counted, never refused."""
        decision = await self._f.shared.limiter.admit(loops, 0.0, self._once_key + ":loops")
        if not decision.admitted:
            limit, _ = decision.binding()
            ex.decisions.append((self.name, "refused:agent_loop_detected", "shadow"))
            self._f.shared.metrics.limit_refusals.labels(profile, limit.reason, "shadow").inc()

    def _run_limits(self, key: str, guess: Estimate) -> list[Limit]:
        config = self._f.config
        expires = self._f.shared.limiter.clock() + config.idle_ttl_s
        wanted = (
            (config.max_requests, "req", 1, True, "run_requests", f"{config.max_requests} requests"),
            (config.max_tokens, "tok", guess.tokens, False, "run_tokens", f"{config.max_tokens} tokens"),
            (config.max_usd, "usd", guess.cost_usd, False, "run_usd", f"${config.max_usd or 0:.2f}"),
        )
        limits: list[Limit] = []
        for most, suffix, cost, strict, reason, what in wanted:
            if most is None or (suffix == "tok" and not cost):
                continue
            text = (
                f"This agent run reached its limit of {what}. "
                "Start a new run (a new x-agent-run-id or conversation) to continue."
            )
            limits.append(Limit(Quota(f"{key}:{suffix}", most, cost, expires, strict), reason, text))
        return limits

    def _loop_limits(self, ex: Exchange, key: str, body: object) -> list[Limit]:
        guard = self._f.config.loop_guard
        if guard is None or guard.mode == "off":
            return []
        n, window = guard.max_repeats, guard.window_s
        loops: list[Limit] = []
        if body is not None:
            text = (
                f"Loop detected: this agent run sent the same request {n} times within {window:g}s; "
                "refusing it again to stop a runaway loop."
            )
            digest = request_hash(body, guard.ignore_fields)
            loops.append(Limit(Rate(f"{key}:loop:r:{digest}", n, window), "loop_request", text))
        for digest in tool_call_hashes(ex, body):
            text = (
                f"Loop detected: this agent run made the same tool call {n} times within {window:g}s; "
                "refusing it again to stop a runaway loop."
            )
            loops.append(Limit(Rate(f"{key}:loop:t:{digest}", n, window), "loop_tool_call", text))
        return loops

    async def on_complete(self, ex: Exchange) -> None:
        if self._settled or not self._taken or self._estimate is None:
            return
        self._settled = True
        f, guess = self._f, self._estimate
        token_delta = actual_tokens(ex, guess.tokens) - guess.tokens
        cost_delta = actual_cost(ex, guess, f.shared.pricing) - guess.cost_usd
        changes: list[QuotaDelta] = []
        for quota in self._taken:
            if quota.key.endswith(":tok") and token_delta:
                changes.append(QuotaDelta(quota.key, token_delta, quota.expires_at))
            elif quota.key.endswith(":usd") and cost_delta:
                changes.append(QuotaDelta(quota.key, cost_delta, quota.expires_at))
        await f.shared.limiter.settle(changes, self._once_key)


class RunsFactory(StageFactory):
    stage = RunsStage

    def __init__(self, config: RunsConfig, shared: LimitsContext, default_max_tokens: int):
        super().__init__(config.mode)
        self.config = config
        self.shared = shared
        self.default_max_tokens = default_max_tokens


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    config: RunsConfig | None = ctx.stage_config(route, "runs")
    if config is None or config.mode == "off":
        return None
    default_max_tokens = ctx.stage_config(route, "ratelimit").default_max_tokens
    return RunsFactory(config, limits_context(ctx), default_max_tokens)

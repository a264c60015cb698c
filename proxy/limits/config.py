"""The policy's limits: `callers.<profile>.rate_limit` and `.budget`, `stages.ratelimit`, `stages.runs`.

Pydantic models referenced from proxy/policy/schema.py, validated when the policy loads.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from proxy.policy.base import Glob, Mode, Strict
from proxy.policy.stage_spec import MetricSpec, StageSpec

# Body fields that differ between retries of the same request, not in what it asks: the loop guard ignores them.
VOLATILE_FIELDS = ("stream", "stream_options", "metadata", "user", "store", "service_tier", "request_id")


class Limits(Strict):
    """Smooth limits: up to a minute's allowance at once, coming back continuously (GCRA)."""

    requests_per_minute: int | None = Field(None, gt=0, le=10_000_000, description="Requests per minute.")
    tokens_per_minute: int | None = Field(
        None,
        gt=0,
        le=10_000_000_000,
        description="Tokens per minute (input and output), admitted on an estimate and corrected by the real usage.",
    )
    concurrent: int | None = Field(None, gt=0, le=100_000, description="Requests in flight at once.")

    @property
    def empty(self) -> bool:
        return self.requests_per_minute is None and self.tokens_per_minute is None and self.concurrent is None


class RateLimit(Limits):
    """A caller's limits; each caller name of the profile has its own (they are not shared by the profile)."""

    per_model: dict[Glob, Limits] = Field(
        default_factory=dict,
        max_length=64,
        description="More limits for the models matching a pattern, on top of the caller's own; the first "
        "matching pattern applies, and its limits are shared by every model it matches.",
    )


class Budget(Strict):
    """Spend per caller, from each request's cost; a caller over budget is refused with `insufficient_quota`."""

    usd_per_day: float | None = Field(None, gt=0, le=1e9, description="USD per UTC day.")
    usd_per_month: float | None = Field(None, gt=0, le=1e9, description="USD per UTC calendar month.")

    @property
    def empty(self) -> bool:
        return self.usd_per_day is None and self.usd_per_month is None


class RateLimitStageConfig(Strict):
    """How limits are enforced; the limits themselves are under `callers.*`."""

    mode: Mode = Field("enforce", description="`shadow` counts and records refusals without refusing.")
    wait_ms: int = Field(
        0,
        ge=0,
        le=60_000,
        description="Wait up to this long for capacity instead of refusing at once (rates and concurrency, "
        "never budgets).",
    )
    default_max_tokens: int = Field(
        1024,
        ge=0,
        le=10_000_000,
        description="Output tokens assumed for admission when a request sets no max_tokens (corrected afterwards).",
    )
    route_limit: Limits | None = Field(
        None, description="Limits on the route as a whole, every caller together (per route under `routes[].stages`)."
    )


class LoopGuardConfig(Strict):
    """Refuses a run that repeats itself: the same request, or the same tool call, too often."""

    mode: Mode = Field("enforce", description="`shadow` records a loop without refusing.")
    max_repeats: int = Field(
        5, ge=1, le=10_000, description="The same request or tool call may occur this often within `window_s`."
    )
    window_s: float = Field(300.0, gt=0, le=86_400, description="The window, sliding smoothly.")
    ignore_fields: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=lambda: list(VOLATILE_FIELDS),
        max_length=64,
        description="Top-level body fields left out when comparing requests.",
    )


class RunsConfig(Strict):
    """Agent runs: one conversation across many calls, from `x-agent-run-id` or the conversation's start."""

    mode: Mode = Field("enforce", description="`shadow` records refusals without refusing.")
    max_requests: int | None = Field(None, gt=0, le=10_000_000, description="Requests per run.")
    max_tokens: int | None = Field(None, gt=0, le=10_000_000_000, description="Tokens per run (input and output).")
    max_usd: float | None = Field(None, gt=0, le=1e9, description="USD per run.")
    idle_ttl_s: float = Field(
        3600.0, gt=0, le=30 * 86_400, description="A run not seen for this long is forgotten; its counts start again."
    )
    loop_guard: LoopGuardConfig | None = Field(None, description="Refuse repeated requests and tool calls.")


# caller = caller profile; how and reason are the fixed sets of proxy/limits/limiter.py.
LIMIT_REFUSALS = MetricSpec(
    "limit_refusals",
    "counter",
    "agent_proxy_limit_refusals",
    "Requests refused (or, in shadow mode, that would have been), by caller profile and reason.",
    ("caller", "reason", "mode"),
)

RATELIMIT_STAGE = StageSpec(
    name="ratelimit",
    implementation="proxy.stages.ratelimit",
    settings=RateLimitStageConfig,
    default_on=True,
    description="How `callers.*.rate_limit` and `.budget` are enforced, and limits per route (proxy/limits/).",
    metrics=(
        MetricSpec(
            "limit_admissions",
            "counter",
            "agent_proxy_limit_admissions",
            "Requests admitted by the limits, by caller profile and how (direct, waited, fail_open).",
            ("caller", "how"),
        ),
        LIMIT_REFUSALS,
        MetricSpec(
            "budget_remaining_usd",
            "gauge",
            "agent_proxy_budget_remaining_usd",
            "USD left in the period (day, month) for the caller of this profile seen last.",
            ("caller", "period"),
            multiprocess_mode="livemostrecent",
        ),
    ),
)

RUNS_STAGE = StageSpec(
    name="runs",
    implementation="proxy.stages.runs",
    settings=RunsConfig,
    description="Agent runs: limits per run and the loop guard (proxy/limits/); refusals count in "
    "`agent_proxy_limit_refusals`.",
)

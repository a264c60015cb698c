"""The policy's accounting settings: the ledger (`ledger:`) and the usage stage (`stages.usage`)."""

from __future__ import annotations

from pydantic import Field

from proxy.policy.base import Mode, Strict
from proxy.policy.stage_spec import MetricSpec, StageSpec


class LedgerConfig(Strict):
    path: str | None = Field(None, description="SQLite file of per-request usage records; none disables it.")
    flush_interval_ms: int = Field(
        200, ge=10, le=60_000, description="Records are committed in one batch this often; a kill -9 loses at most one."
    )
    max_queued: int = Field(
        100_000, ge=100, le=10_000_000, description="Records waiting for the writer; past this, new ones are dropped."
    )
    flush_timeout_ms: int = Field(
        5000, ge=10, le=600_000, description="Longest wait of /admin/usage for queued records to be committed."
    )


class UsageConfig(Strict):
    """Token and cost accounting: metrics, the ledger record and the log line's figures."""

    mode: Mode = Field("enforce", description="`off` stops accounting on a route; `shadow` never asks for usage.")
    stream_usage: bool = Field(
        True,
        description="Ask OpenAI-style upstreams for usage on streams (stream_options.include_usage) and remove "
        "it again from what the caller receives, when the caller did not ask for it.",
    )
    estimate: bool = Field(True, description="Count tokens locally (marked estimated) when the upstream reports none.")


# caller = caller profile; model = the price-table name it matched, or "other".
USAGE_STAGE = StageSpec(
    name="usage",
    implementation="proxy.stages.usage",
    settings=UsageConfig,
    default_on=True,
    description="Token and cost accounting.",
    metrics=(
        MetricSpec(
            "tokens",
            "counter",
            "agent_proxy_tokens",
            "Tokens by caller profile, priced model and kind (input, cached_input, cache_write, output, reasoning).",
            ("caller", "model", "kind"),
        ),
        MetricSpec(
            "cost_usd",
            "counter",
            "agent_proxy_cost_usd",
            "Cost in USD by caller profile and priced model.",
            ("caller", "model"),
        ),
        MetricSpec(
            "unpriced",
            "counter",
            "agent_proxy_unpriced_requests",
            "Requests with token usage whose model is in no price table (cost recorded as null).",
            ("caller", "upstream"),
        ),
        MetricSpec(
            "usage_estimated",
            "counter",
            "agent_proxy_usage_estimated_requests",
            "Requests whose token counts were estimated locally (no usage from the upstream, or cut short).",
            ("caller", "upstream"),
        ),
    ),
)

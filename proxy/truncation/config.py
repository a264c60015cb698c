"""The policy's `stages.truncation`, and the stage's declaration.

A budget is found per request: the first `per_model` glob that matches the model, else
`budget_tokens`, else the model's context window from the shipped table
(proxy/data/context_windows.json) minus the output the request allows itself. The
`margin_ratio` is held back below every budget, since the offline tokenizer is an
estimate for models whose tokenizer is not public.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from proxy.policy.base import Glob, Mode, Strict
from proxy.policy.stage_spec import MetricSpec, StageSpec

MAX_BUDGET = 10_000_000
Tokens = Annotated[int, Field(gt=0, le=MAX_BUDGET)]


class TruncationConfig(Strict):
    """Trim chat prompts (openai and anthropic routes) to a token budget, dropping the oldest turns first."""

    mode: Mode = Field("enforce", description="`shadow` records what would be cut and forwards the body as sent.")
    budget_tokens: int | None = Field(
        None, gt=0, le=MAX_BUDGET, description="Prompt tokens for every model on the route (after `per_model`)."
    )
    per_model: dict[Glob, Tokens] = Field(
        default_factory=dict,
        max_length=256,
        description="Prompt tokens by model glob (fnmatch, case-sensitive); the first match wins.",
    )
    context_windows: bool = Field(
        True,
        description="Models without a budget above: their context window (shipped table) minus the output cap. "
        "`false`: such models pass untouched.",
    )
    default_output_tokens: int = Field(
        4096,
        ge=0,
        le=MAX_BUDGET,
        description="Output held free in a context window when the request sets no `max_tokens`.",
    )
    margin_ratio: float = Field(
        0.05, ge=0, le=0.5, description="Fraction of every budget held back for the tokenizer's estimate."
    )


TRUNCATION_STAGE = StageSpec(
    name="truncation",
    implementation="proxy.stages.truncation",
    settings=TruncationConfig,
    description="Prompt truncation to a token budget, keeping the conversation valid (proxy/truncation/).",
    metrics=(
        MetricSpec(
            "truncations",
            "counter",
            "agent_proxy_truncations",
            "Prompts over budget by route and result (truncated, too_long); mode=shadow: only recorded.",
            ("route", "result", "mode"),
        ),
        MetricSpec(
            "truncated_tokens",
            "counter",
            "agent_proxy_truncated_tokens",
            "Prompt tokens cut (or, in shadow mode, that would have been), by route.",
            ("route", "mode"),
        ),
    ),
)

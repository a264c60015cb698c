"""What a request will probably use, before it is sent: cheap on purpose, corrected afterwards.

Prompt tokens are estimated as characters / 4 of the text the protocol adapter finds
(messages, system prompt, plain input), with no tokenizer on the request path; output
tokens are the request's own cap (`max_tokens`, `max_completion_tokens`,
`max_output_tokens`) or the policy's default. After the response, limits are corrected
with the real usage (`ex.usage`, filled by the usage stage) and the real cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.exchange import Exchange
from proxy.policy.schema import Pricing
from proxy.protocols.base import Usage
from proxy.tokens import content_text

try:  # the accounting module prices usage; without it, the policy's own table is used
    from proxy.pricing import cost_usd as _cost_usd
except ImportError:  # pragma: no cover - kept so the limits work on their own
    _cost_usd = None

OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass(frozen=True, slots=True)
class Estimate:
    model: str | None
    prompt_tokens: int
    output_tokens: int
    cost_usd: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


def prompt_chars(ex: Exchange, body: Any) -> int:
    protocol = ex.protocol
    chars = 0
    system = protocol.system_prompt(body)
    if system:
        chars += len(content_text(system))
    messages = protocol.request_messages(body)
    for message in messages:
        chars += len(content_text(message.get("content")))
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            chars += sum(len(content_text(call.get("function") or {})) for call in calls if isinstance(call, dict))
    if not messages:
        chars += len(protocol.request_input_text(body))
    return chars


def output_cap(body: Any, default: int) -> int:
    if isinstance(body, dict):
        for field in OUTPUT_CAPS:
            value = body.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return default


def cost_of(model: str | None, usage: Usage, pricing: Mapping[str, Pricing]) -> float | None:
    """USD for `usage` on `model`, None when unpriced: `proxy.pricing` when present, else the policy's table."""
    if _cost_usd is not None:
        return _cost_usd(model, usage, pricing)
    rates = pricing.get(model or "")
    if rates is None or not usage.known:
        return None
    cached = rates.cached_input if rates.cached_input is not None else rates.input
    return (
        (usage.input_tokens or 0) * rates.input
        + (usage.cached_input_tokens or 0) * cached
        + (usage.cache_write_tokens or 0) * (rates.cache_write if rates.cache_write is not None else rates.input)
        + (usage.output_tokens or 0) * rates.output
    ) / 1_000_000


def estimate(ex: Exchange, default_output: int, pricing: Mapping[str, Pricing]) -> Estimate:
    """For an LLM request whose body has arrived; a body-less or non-JSON request costs nothing."""
    if not ex.protocol.parses_json or not ex.body:
        return Estimate(None, 0, 0, 0.0)
    body = ex.request_json
    model = ex.protocol.request_model(body)
    prompt = math.ceil(prompt_chars(ex, body) / 4)
    output = output_cap(body, default_output)
    cost = cost_of(model, Usage(input_tokens=prompt, output_tokens=output), pricing)
    return Estimate(model, prompt, output, cost or 0.0)


def actual_tokens(ex: Exchange, guess: int) -> int:
    """Tokens the request really used: reported (or counted) usage, else the guess if it was answered."""
    if ex.cache_hit or ex.upstream_name is None:
        return 0
    if ex.usage.known:
        return ex.usage.total_tokens
    return guess if _answered(ex) else 0


def actual_cost(ex: Exchange, guess: Estimate, pricing: Mapping[str, Pricing]) -> float:
    if ex.cache_hit or ex.upstream_name is None:
        return 0.0
    if ex.cost_usd is not None:
        return ex.cost_usd
    if ex.usage.known:
        cost = cost_of(ex.model_served or guess.model, ex.usage, pricing)
        return cost if cost is not None else 0.0
    return guess.cost_usd if _answered(ex) else 0.0


def _answered(ex: Exchange) -> bool:
    return ex.status is not None and 200 <= ex.status < 300

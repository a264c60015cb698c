"""What a request cost, from its token counts and a price table.

The policy's `pricing` is consulted first, then the shipped default table
(proxy/data/pricing.json, dated in the file). A dated variant prices as its base name
unless it is listed itself: `gpt-4o-2024-08-06` as `gpt-4o`, `claude-sonnet-4-5-20250929`
as `claude-sonnet-4-5`. An unknown model has no cost (None), never a cost of zero.

Token kinds are disjoint on the input side (see `Usage`), so the bill is a plain sum:
uncached input, cache reads and cache writes each at their own rate, plus output
(which includes reasoning tokens). A table without a cache rate bills those tokens as input.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import orjson

from proxy.policy.schema import Pricing
from proxy.protocols.base import Usage

PER_TOKENS = 1_000_000
OTHER = "other"
_DATED = re.compile(r"(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4})|-latest)$")


@functools.cache
def default_table() -> dict[str, Pricing]:
    return {name: Pricing(**entry) for name, entry in _raw_table()["models"].items()}


@functools.cache
def _raw_table() -> dict[str, Any]:
    raw: dict[str, Any] = orjson.loads(resources.files("proxy").joinpath("data", "pricing.json").read_bytes())
    return raw


def table_date() -> str:
    """The date the shipped default prices were taken."""
    return str(_raw_table()["as_of"])


def base_name(model: str) -> str:
    """The model name without a date or `-latest` suffix."""
    return _DATED.sub("", model)


def resolve(model: str | None, policy_pricing: Mapping[str, Pricing] | None = None) -> tuple[str, Pricing] | None:
    """The table entry that prices `model`, with the name it was found under."""
    if not model:
        return None
    tables = (policy_pricing or {}, default_table())
    for table in tables:
        if model in table:
            return model, table[model]
    base = base_name(model)
    if base != model:
        for table in tables:
            if base in table:
                return base, table[base]
    return None


def priced_name(model: str | None, policy_pricing: Mapping[str, Pricing] | None = None) -> str:
    """A bounded metric label: the name matched in a price table, or `other`."""
    found = resolve(model, policy_pricing)
    return found[0] if found else OTHER


def price(usage: Usage, rates: Pricing) -> float | None:
    """USD, finite and non-negative; None if the rates make it anything else (an infinite price)."""
    return price_tokens(
        rates,
        usage.input_tokens or 0,
        usage.cached_input_tokens or 0,
        usage.cache_write_tokens or 0,
        usage.output_tokens or 0,
    )


def price_tokens(rates: Pricing, uncached: int, cached: int, written: int, output: int) -> float | None:
    """`price` of these counts, without a Usage made for them (admission prices three per request)."""
    cached_rate = rates.cached_input if rates.cached_input is not None else rates.input
    write_rate = rates.cache_write if rates.cache_write is not None else rates.input
    total = uncached * rates.input + cached * cached_rate + written * write_rate + output * rates.output
    cost = total / PER_TOKENS
    return cost if math.isfinite(cost) and cost >= 0 else None


def cost_usd(model: str | None, usage: Usage, policy_pricing: Mapping[str, Pricing] | None = None) -> float | None:
    """USD for `usage` on `model`; None when the model is in no price table or nothing was counted."""
    found = resolve(model, policy_pricing)
    if found is None or not usage.known:
        return None
    return price(usage, found[1])

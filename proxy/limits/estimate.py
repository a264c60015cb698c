"""What a request can cost at most, before it is sent: cheap on purpose, corrected afterwards.

An upper bound, so that what admission reserves covers what the request can use whatever its
text: prompt tokens are at most the request body's bytes (every token of a byte-level BPE
tokenizer stands for at least one byte of UTF-8, and the JSON around the text, its keys and
quotes, costs more bytes than the per-message framing costs tokens), except that an image,
audio or file part counts `MEDIA_PART_TOKENS` instead of its bytes (a base64 image would
otherwise reserve a million tokens, and a linked one only its URL's bytes: for media the
figure is an assumption, not a bound). Output tokens are the request's own cap
(`max_tokens`, `max_completion_tokens`, `max_output_tokens`) times its `n` choices, or the
policy's `default_max_tokens` when it sets none (then an assumption too). No tokenizer runs
on the request path. After the response, limits are corrected with the real usage
(`ex.usage`, filled by the usage stage) and the real cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.accounting.pricing import PER_TOKENS, cost_usd, price_tokens, resolve
from proxy.exchange import Exchange
from proxy.policy.schema import Pricing
from proxy.protocols import PROTOCOLS
from proxy.protocols.base import Protocol

MEDIA_PART_TOKENS = 1600  # about the most one image costs on Claude and GPT-4o; PDFs and audio can cost more


@dataclass(slots=True)  # one per request: not frozen, which costs three times as much to build
class Estimate:
    model: str | None
    prompt_tokens: int
    output_tokens: int
    cost_usd: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


def output_cap(body: Any, default: int, protocol: Protocol = PROTOCOLS["openai"]) -> int:
    """The output tokens a request allows itself, times its choices, as its protocol reads them."""
    return protocol.output_cap(body, default)


def estimate(ex: Exchange, default_output: int, pricing: Mapping[str, Pricing]) -> Estimate:
    """For an LLM request whose body has arrived; a body-less or non-JSON request costs nothing."""
    if not ex.has_llm_body:
        return Estimate(None, 0, 0, 0.0)
    body = ex.request_json
    model = ex.protocol.request_model(body)
    prompt = ex.protocol.prompt_bound(ex.body, body, MEDIA_PART_TOKENS)
    output = ex.protocol.output_cap(body, default_output)
    # The prompt at the dearest input-side rate: uncached, a cache read or a cache write (the model looked up once).
    priced = _priced(model, pricing)
    if priced is None:
        return Estimate(model, prompt, output, 0.0)
    return Estimate(model, prompt, output, _dearest_price(priced, prompt, output))


def _dearest_price(priced: tuple[Pricing, int, float, float], prompt: int, output: int) -> float:
    """The largest of the three prices, the prompt counted uncached, as a cache read or as a cache write."""
    rates, slot, prompt_rate, output_rate = priced
    # `price_tokens` with the prompt's count in the dearest slot: rates are finite and non-negative, so the other
    # two slots' products are zeros, which add nothing.
    cost = (prompt * prompt_rate + output * output_rate) / PER_TOKENS
    if 0.0 <= cost < math.inf:
        return cost
    # The dearest rate gives the dearest of the three prices; only a price too large to be finite (then None)
    # needs the other two.
    counts = [0, 0, 0]
    counts[slot] = prompt
    dearest = price_tokens(rates, *counts, output)
    if dearest is None:
        dearest = 0.0  # the largest of the three that is not None (a price is never negative)
        for price in (
            price_tokens(rates, prompt, 0, 0, output),
            price_tokens(rates, 0, prompt, 0, output),
            price_tokens(rates, 0, 0, prompt, output),
        ):
            if price is not None and price > dearest:
                dearest = price
    return dearest


# (id(price table), model) -> (the table, and the model's rates, dearest input-side slot, that slot's rate and the
# output rate; or None when no table prices it): `resolve` and `_dearest_slot` once per model.
_PRICED: dict[tuple[int, str | None], tuple[Mapping[str, Pricing], tuple[Pricing, int, float, float] | None]] = {}
_PRICED_ENTRIES = 1024  # models remembered (then it starts over: names come from requests, a reload brings new tables)
_PRICED_NAME_CHARS = 200  # a longer model name (from a request, so bounded here) is looked up each time


def _priced(model: str | None, pricing: Mapping[str, Pricing]) -> tuple[Pricing, int, float, float] | None:
    key = (id(pricing), model)
    found = _PRICED.get(key)
    if found is not None and found[0] is pricing:
        return found[1]
    resolved = resolve(model, pricing)
    priced = None
    if resolved is not None:
        rates = resolved[1]
        slot = _dearest_slot(rates)
        priced = rates, slot, _input_rates(rates)[slot], rates.output
    if model is None or len(model) <= _PRICED_NAME_CHARS:
        if len(_PRICED) >= _PRICED_ENTRIES:
            _PRICED.clear()
        _PRICED[key] = (pricing, priced)
    return priced


def _input_rates(rates: Pricing) -> list[float]:
    """Uncached, cache read and cache write, as `price_tokens` applies them (an unset cache rate is the input rate)."""
    return [rates.input if rate is None else rate for rate in (rates.input, rates.cached_input, rates.cache_write)]


def _dearest_slot(rates: Pricing) -> int:
    """Which input-side count (uncached, cache read, cache write) `rates` prices highest."""
    per_token = _input_rates(rates)
    return per_token.index(max(per_token))


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
        cost = cost_usd(ex.model_served or guess.model, ex.usage, pricing)
        return cost if cost is not None else 0.0
    return guess.cost_usd if _answered(ex) else 0.0


def _answered(ex: Exchange) -> bool:
    return ex.status is not None and 200 <= ex.status < 300

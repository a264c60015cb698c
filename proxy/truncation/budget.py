"""A request's prompt budget: the policy's per model or per route, else the model's context window.

The shipped table (proxy/data/context_windows.json) holds the OpenAI and Anthropic models of
the price table; a dated variant uses its base name, as prices do.
"""

from __future__ import annotations

import functools
import math
from fnmatch import fnmatchcase
from importlib import resources

import orjson

from proxy.accounting.pricing import base_name
from proxy.truncation.config import TruncationConfig


@functools.cache
def context_windows() -> dict[str, int]:
    raw = orjson.loads(resources.files("proxy").joinpath("data", "context_windows.json").read_bytes())
    return {name: int(tokens) for name, tokens in raw["models"].items()}


def context_window(model: str | None) -> int | None:
    if not model:
        return None
    table = context_windows()
    return table.get(model) or table.get(base_name(model))


def prompt_budget(config: TruncationConfig, model: str | None, output_cap: int) -> int | None:
    """Prompt tokens allowed, the margin taken off; None when the model has no budget (left untouched)."""
    budget: int | None = None
    if model is not None:
        budget = next((tokens for glob, tokens in config.per_model.items() if fnmatchcase(model, glob)), None)
    if budget is None:
        budget = config.budget_tokens
    if budget is None and config.context_windows and (window := context_window(model)) is not None:
        budget = max(window - output_cap, 0)
    if budget is None:
        return None
    return math.floor(budget * (1 - config.margin_ratio))

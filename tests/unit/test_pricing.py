"""Cost arithmetic, dated-variant matching, policy overrides, and unknown models."""

from __future__ import annotations

import pytest

from proxy.accounting.pricing import OTHER, base_name, cost_usd, default_table, priced_name, resolve, table_date
from proxy.policy.schema import Pricing
from proxy.protocols.base import Usage


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("gpt-4-0613", "gpt-4"),
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),
        ("gpt-4o", "gpt-4o"),
        ("claude-opus-4-0", "claude-opus-4-0"),
    ],
)
def test_base_name_strips_dates(model, base):
    assert base_name(model) == base


def test_default_table_is_dated_and_covers_common_models():
    assert table_date() >= "2025-01-01"
    table = default_table()
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"):
        assert model in table


def test_dated_variants_price_as_their_base_unless_listed():
    assert resolve("gpt-4o-2024-08-06")[0] == "gpt-4o"
    assert resolve("gpt-4o-2024-05-13")[0] == "gpt-4o-2024-05-13"  # listed: its own, older price
    assert resolve("gpt-4o-mini-2024-07-18")[0] == "gpt-4o-mini"  # never the shorter gpt-4o
    assert resolve("claude-sonnet-4-5-20250929")[0] == "claude-sonnet-4-5"


def test_openai_arithmetic_bills_cached_input_at_its_rate():
    usage = Usage(input_tokens=600_000, cached_input_tokens=400_000, output_tokens=100_000, reasoning_tokens=50_000)
    # gpt-4o: 2.50 in, 1.25 cached, 10.00 out; reasoning is inside output.
    assert cost_usd("gpt-4o-2024-08-06", usage) == pytest.approx(0.6 * 2.5 + 0.4 * 1.25 + 0.1 * 10.0)


def test_anthropic_arithmetic_bills_cache_writes_and_reads():
    usage = Usage(input_tokens=1000, cached_input_tokens=20_000, cache_write_tokens=5000, output_tokens=300)
    expected = (1000 * 3.0 + 20_000 * 0.3 + 5000 * 3.75 + 300 * 15.0) / 1e6
    assert cost_usd("claude-sonnet-4-5-20250929", usage) == pytest.approx(expected)


def test_policy_pricing_overrides_the_default_and_prices_new_models():
    policy = {"gpt-4o": Pricing(input=1.0, output=2.0), "house-model": Pricing(input=0.5, output=0.5)}
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_usd("gpt-4o-2024-11-20", usage, policy) == pytest.approx(1.0 + 1.0 + 2.0)  # no cached rate: input
    assert cost_usd("house-model", usage, policy) == pytest.approx(1.5)
    assert priced_name("house-model", policy) == "house-model"


def test_unknown_models_have_no_cost_and_the_other_label():
    usage = Usage(input_tokens=10, output_tokens=10)
    assert cost_usd("my-local-llama", usage) is None
    assert cost_usd(None, usage) is None
    assert priced_name("my-local-llama") == OTHER
    assert cost_usd("gpt-4o", Usage()) is None  # nothing counted: no cost either

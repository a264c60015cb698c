"""The pieces around the limiter: provider headers, run identity, estimates, keys, the memory store's bound."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.accounting import tokens
from proxy.accounting.pricing import price_tokens
from proxy.exchange import Exchange
from proxy.limits.estimate import MEDIA_PART_TOKENS, estimate, output_cap
from proxy.limits.headers import openai_duration, rate_headers, retry_headers, rfc3339
from proxy.limits.keys import day_period, month_period, new_lease, part
from proxy.limits.run_identity import request_hash, run_id, tool_call_hashes
from proxy.policy.compile import compile_policy
from proxy.policy.load import policy_from_text
from proxy.policy.schema import Pricing
from proxy.state import MemoryStore, Rate

POLICY = """
version: 1
upstreams:
  oa: {url: "http://127.0.0.1:9", protocol: openai}
  an: {url: "http://127.0.0.1:9", protocol: anthropic}
  tool: {url: "http://127.0.0.1:9", protocol: http}
routes:
  - {name: anthropic, prefix: /v1/messages, upstream: an}
  - {name: search, prefix: /tools/search/, upstream: tool, tool: search}
  - {name: openai, prefix: /v1/, upstream: oa}
pricing:
  house: {input: 2, output: 8}
"""
COMPILED = compile_policy(policy_from_text(POLICY, env={}))


def exchange(path: str, body: dict | None = None, headers: dict[str, str] | None = None) -> Exchange:
    route = COMPILED.match(path, "POST")
    assert route is not None
    return Exchange(
        request_id="r",
        method="POST",
        path=path,
        query_string="",
        headers=CIMultiDictProxy(CIMultiDict(headers or {})),
        route=route,
        protocol=route.protocol,
        body=orjson.dumps(body) if body is not None else b"",
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0ms"), (0.0123, "13ms"), (1, "1s"), (1.5, "1.5s"), (6.0001, "6.001s"), (360, "6m0s"), (3723, "1h2m3s")],
)
def test_openai_reset_durations_read_like_openais(seconds, text):
    assert openai_duration(seconds) == text


def test_headers_follow_each_providers_convention():
    reports = {"requests": (60, 59, 1.0), "tokens": (1000, 400.0, 36.0)}
    openai = rate_headers("openai", reports)
    assert openai == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "400",
        "x-ratelimit-reset-tokens": "36s",
    }
    anthropic = rate_headers("anthropic", reports, now=1_750_000_000.2)
    assert anthropic["anthropic-ratelimit-tokens-remaining"] == "400"
    assert anthropic["anthropic-ratelimit-requests-reset"] == "2025-06-15T15:06:42Z"  # rounded up to the second
    assert rate_headers("http", reports) == {}
    assert retry_headers(0.0004) == {"retry-after": "1", "retry-after-ms": "1"}
    no_retry = {"retry-after": "13", "retry-after-ms": "12300", "x-should-retry": "false"}
    assert retry_headers(12.3, retry=False) == no_retry
    assert datetime.strptime(rfc3339(0, 0), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp() == 0


def test_a_conversation_keeps_its_run_as_it_grows_and_the_header_wins():
    start = [{"role": "system", "content": "agent"}, {"role": "user", "content": "task A"}]
    later = [*start, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    first = run_id(exchange("/v1/chat/completions", {}), {"model": "m", "messages": start})
    assert first is not None and first.startswith("f")
    assert run_id(exchange("/v1/chat/completions", {}), {"model": "x", "messages": later}) == first
    other = [{"role": "system", "content": "agent"}, {"role": "user", "content": "task B"}]
    assert run_id(exchange("/v1/chat/completions", {}), {"messages": other}) != first
    # Anthropic's system prompt lives outside the messages; it is part of the prefix.
    anthropic = exchange("/v1/messages", {})
    one = run_id(anthropic, {"system": "agent one", "messages": start[1:]})
    assert one != run_id(anthropic, {"system": "agent two", "messages": start[1:]})
    named = exchange("/v1/chat/completions", {}, {"x-agent-run-id": "run-42"})
    assert run_id(named, {"messages": start}) == run_id(named, {"messages": other})
    assert run_id(exchange("/v1/chat/completions", {}), {"messages": start[:1]}) is None  # no user turn yet


def test_the_same_request_ignores_volatile_fields_only():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    ignore = ["stream", "stream_options", "user"]
    same = request_hash(body, ignore)
    assert request_hash({**body, "stream": True, "stream_options": {"include_usage": True}}, ignore) == same
    assert request_hash(dict(reversed(body.items())), ignore) == same
    assert request_hash({**body, "temperature": 1}, ignore) != same


def test_tool_calls_are_the_latest_assistant_turn_compared_by_name_and_arguments():
    def chat(arguments: str) -> dict:
        call = {"id": "c", "type": "function", "function": {"name": "search", "arguments": arguments}}
        old = {**call, "function": {"name": "old", "arguments": "{}"}}
        return {
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "tool_calls": [old]},
                {"role": "tool", "content": "r"},
                {"role": "assistant", "tool_calls": [call, call]},
                {"role": "tool", "content": "r"},
            ]
        }

    ex = exchange("/v1/chat/completions", {})
    first = tool_call_hashes(ex, chat('{"q": 1, "p": 2}'))
    assert len(first) == 1  # the same call twice in one turn is one call; the older turn is not counted
    assert tool_call_hashes(ex, chat('{"p":2,"q":1}')) == first
    assert tool_call_hashes(ex, chat('{"q": 2}')) != first

    responses = {
        "input": [
            {"role": "user", "content": "go"},
            {"type": "function_call", "name": "old", "arguments": "{}"},
            {"type": "function_call_output", "output": "r"},
            {"type": "function_call", "name": "search", "arguments": '{"q": 1, "p": 2}'},
            {"type": "function_call_output", "output": "r"},
        ]
    }
    assert tool_call_hashes(ex, responses) == first
    use = {"type": "tool_use", "name": "search", "id": "t", "input": {"p": 2, "q": 1}}
    anthropic = {
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "text", "text": "x"}, use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]},
        ]
    }
    assert tool_call_hashes(exchange("/v1/messages", {}), anthropic) == first
    tool = exchange("/tools/search/q", {"q": 1})
    assert len(tool_call_hashes(tool, None)) == 1 and tool_call_hashes(tool, None) != first


def test_the_estimate_is_the_body_bytes_plus_the_output_cap_priced_at_the_dearest_rate():
    body = {"model": "house", "max_completion_tokens": 100, "messages": [{"role": "user", "content": "x" * 400}]}
    ex = exchange("/v1/chat/completions", body)
    guess = estimate(ex, 1024, COMPILED.policy.pricing)
    assert (guess.prompt_tokens, guess.output_tokens) == (len(ex.body), 100)
    assert guess.cost_usd == pytest.approx((len(ex.body) * 2 + 100 * 8) / 1e6)
    written = estimate(ex, 1024, {"house": Pricing(input=2, output=8, cache_write=3)})  # a cache write costs more
    assert written.cost_usd == pytest.approx((len(ex.body) * 3 + 100 * 8) / 1e6)
    unpriced = estimate(exchange("/v1/chat/completions", {**body, "model": "nobody"}), 1024, {})
    assert unpriced.cost_usd == 0 and unpriced.tokens == guess.tokens + 1  # one byte more of model name
    assert output_cap({"max_tokens": True}, 7) == 7 and output_cap({"max_output_tokens": 9}, 7) == 9
    assert output_cap({"max_tokens": 10, "n": 3}, 7) == 30 and output_cap({"n": 2}, 7) == 14
    assert estimate(exchange("/tools/search/q", {"q": 1}), 1024, {}).tokens == 0  # a tool call has no tokens


_RATES = st.floats(min_value=0, max_value=1e300, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    rates=st.tuples(_RATES, _RATES, st.none() | _RATES, st.none() | _RATES),
    text=st.integers(min_value=0, max_value=3000),
    cap=st.integers(min_value=0, max_value=2**63 - 1),  # what a JSON body can carry
)
def test_the_estimate_prices_the_prompt_exactly_as_the_dearest_of_its_three_prices(rates, text, cap):
    pricing = {"house": Pricing(input=rates[0], output=rates[1], cached_input=rates[2], cache_write=rates[3])}
    body = {"model": "house", "max_tokens": cap, "messages": [{"role": "user", "content": "x" * text}]}
    guess = estimate(exchange("/v1/chat/completions", body), 1024, pricing)
    prices = [price_tokens(pricing["house"], *counts, guess.output_tokens) for counts in _slots(guess.prompt_tokens)]
    assert guess.cost_usd == max([0.0, *(price for price in prices if price is not None)])


def _slots(prompt: int) -> list[tuple[int, int, int]]:
    return [(prompt, 0, 0), (0, prompt, 0), (0, 0, prompt)]


def test_a_media_part_counts_its_allowance_not_its_base64_bytes():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100_000}}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]}
    guess = estimate(exchange("/v1/chat/completions", body), 0, {})
    text_only = exchange("/v1/chat/completions", {**body, "messages": [{"role": "user", "content": "what?"}]})
    assert len(text_only.body) < guess.prompt_tokens <= len(text_only.body) + MEDIA_PART_TOKENS + 100


TEXTS = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=400),  # digits: about one token per 3
    st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=200),  # CJK
    st.text(min_size=1, max_size=300),  # any code point: emoji, scripts, controls, surrogate-free
    st.sampled_from(["def f(x):\n\treturn x[0] + {'a': [1, 2]}\n" * 8, "ab " * 200, "\u200b" * 100]),
)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(TEXTS, min_size=1, max_size=4), system=st.one_of(st.none(), TEXTS))
def test_the_prompt_bound_is_at_least_the_exact_token_count_for_any_text(texts, system):
    """Checked against the shipped tokenizers, OpenAI's chat framing included."""
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(texts)]
    framed = ([{"role": "system", "content": system}] if system else []) + messages
    openai_body = {"model": "gpt-4o", "messages": framed}
    bound = estimate(exchange("/v1/chat/completions", openai_body), 0, {}).prompt_tokens
    exact = max(
        tokens.count_messages(openai_body["messages"], model)
        for model in ("gpt-4o", "gpt-4")  # o200k and cl100k
    )
    assert exact <= bound
    anthropic_body = {"model": "claude-sonnet-4-5", "max_tokens": 1, "messages": messages, "system": system or ""}
    exact = tokens.count_messages(messages, "gpt-4", system=system)
    assert exact <= estimate(exchange("/v1/messages", anthropic_body), 0, {}).prompt_tokens


def test_keys_and_periods():
    assert part("support-bot") == "support-bot"
    hashed = part("user:alice@example.com")
    assert hashed.startswith("~") and "alice" not in hashed and hashed == part("user:alice@example.com")
    assert new_lease() != new_lease()
    assert day_period(datetime(2026, 2, 28, 23, 59, tzinfo=UTC).timestamp()) == (
        "20260228",
        datetime(2026, 3, 1, tzinfo=UTC).timestamp(),
    )
    assert month_period(datetime(2026, 12, 31, 12, tzinfo=UTC).timestamp()) == (
        "202612",
        datetime(2027, 1, 1, tzinfo=UTC).timestamp(),
    )


async def test_the_memory_store_stays_within_its_bound_keeping_the_recently_written():
    store = MemoryStore(max_keys=100)
    await store.acquire([Rate("hot", 1000, 60, 1)], 0.0)
    for n in range(500):
        await store.acquire([Rate(f"run:{n}", 1000, 60, 1)], 0.0)
        if n % 50 == 0:
            await store.acquire([Rate("hot", 1000, 60, 1)], 0.0)  # still in use: kept
    assert len(store) <= 100
    (verdict,) = await store.acquire([Rate("hot", 1000, 60, 1)], 0.0)
    assert verdict.remaining == 1000 - 12

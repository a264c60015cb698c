"""Token and cost accounting through the real SDKs: ledger rows and metrics equal the upstream's counts."""

from __future__ import annotations

import math

import anthropic
import openai
import pytest

from proxy.accounting.tokens import count_messages, count_tokens
from tests.fixtures.ledger import ledger_rows, wait_rows
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "hi there"}]
M = 1_000_000


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def proxy(proxy_factory, fake_upstream, ledger):
    extra = f"""
ledger: {{path: {ledger}, flush_interval_ms: 20}}
pricing:
  house-model: {{input: 0.5, output: 1.5}}
"""
    return proxy_factory(basic_policy(fake_upstream.url, extra))


def session(name: str) -> dict[str, str]:
    return {"x-session-id": name}


def oai(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)


def claude(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0)


def tokens_metric(proxy, model: str, kind: str) -> float:
    return proxy.metric("agent_proxy_tokens_total", {"caller": "default", "model": model, "kind": kind})


def cost_metric(proxy, model: str) -> float:
    return proxy.metric("agent_proxy_cost_usd_total", {"caller": "default", "model": model})


def test_openai_chat_plain_and_streamed_record_the_upstreams_counts(proxy, fake_upstream, ledger):
    direct = openai.OpenAI(base_url=fake_upstream.openai_url, api_key="x", max_retries=0)
    known = direct.chat.completions.create(model="gpt-4o", messages=MESSAGES).usage
    fake_upstream.reset()

    plain = oai(proxy).chat.completions.create(
        model="gpt-4o-2024-08-06", messages=MESSAGES, extra_headers=session("chat")
    )
    assert plain.usage.prompt_tokens == known.prompt_tokens and plain.usage.completion_tokens == known.completion_tokens
    chunks = list(
        oai(proxy).chat.completions.create(
            model="gpt-4o-2024-08-06", messages=MESSAGES, stream=True, extra_headers=session("chat")
        )
    )
    assert fake_upstream.last().json()["stream_options"] == {"include_usage": True}
    assert all(chunk.usage is None and chunk.choices for chunk in chunks), "the caller did not ask for usage"

    rows = wait_rows(ledger, "chat", 2)
    expected_cost = (known.prompt_tokens * 2.5 + known.completion_tokens * 10.0) / M
    for row, stream in zip(rows, (False, True), strict=True):
        assert row["stream"] == stream
        assert (row["input_tokens"], row["output_tokens"]) == (known.prompt_tokens, known.completion_tokens)
        assert (row["cached_input_tokens"], row["reasoning_tokens"]) == (0, 0)
        assert row["model_requested"] == row["model_served"] == "gpt-4o-2024-08-06"
        assert row["model_priced"] == "gpt-4o"
        assert row["cost_usd"] == pytest.approx(expected_cost)
        where = (row["caller"], row["key_id"], row["route"], row["upstream"])
        assert where == ("demo", "demo-key", "openai", "up-openai")
        assert (row["status"], row["outcome"], row["estimated"], row["cache_hit"]) == (200, "ok", 0, 0)
        assert row["latency_ms"] >= row["ttfb_ms"] > 0
    assert tokens_metric(proxy, "gpt-4o", "input") == 2 * known.prompt_tokens
    assert tokens_metric(proxy, "gpt-4o", "output") == 2 * known.completion_tokens
    assert cost_metric(proxy, "gpt-4o") == pytest.approx(2 * expected_cost)


def test_anthropic_plain_and_streamed_usage_comes_from_the_body_and_the_stream_events(proxy, fake_upstream, ledger):
    direct = anthropic.Anthropic(base_url=fake_upstream.url, api_key="x", max_retries=0)
    known = direct.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=MESSAGES).usage
    model = "claude-sonnet-4-5-20250929"
    plain = claude(proxy).messages.create(model=model, max_tokens=50, messages=MESSAGES, extra_headers=session("c"))
    with claude(proxy).messages.stream(
        model=model, max_tokens=50, messages=MESSAGES, extra_headers=session("c")
    ) as stream:
        final = stream.get_final_message()
    assert plain.usage.output_tokens == final.usage.output_tokens == known.output_tokens

    rows = wait_rows(ledger, "c", 2)
    expected_cost = (known.input_tokens * 3.0 + known.output_tokens * 15.0) / M
    for row in rows:
        assert (row["input_tokens"], row["output_tokens"]) == (known.input_tokens, known.output_tokens)
        assert (row["cached_input_tokens"], row["cache_write_tokens"]) == (0, 0)
        assert row["model_priced"] == "claude-sonnet-4-5" and row["estimated"] == 0
        assert row["cost_usd"] == pytest.approx(expected_cost)
    assert [r["stream"] for r in rows] == [0, 1]
    assert tokens_metric(proxy, "claude-sonnet-4-5", "output") == 2 * known.output_tokens
    assert cost_metric(proxy, "claude-sonnet-4-5") == pytest.approx(2 * expected_cost)


def test_responses_api_and_embeddings(proxy, fake_upstream, ledger):
    direct = openai.OpenAI(base_url=fake_upstream.openai_url, api_key="x", max_retries=0)
    known = direct.responses.create(model="gpt-4.1", input="hello").usage
    client = oai(proxy)
    client.responses.create(model="gpt-4.1", input="hello", extra_headers=session("r"))
    with client.responses.stream(model="gpt-4.1", input="hello", extra_headers=session("r")) as stream:
        assert stream.get_final_response().usage.output_tokens == known.output_tokens
    embedded = client.embeddings.create(
        model="text-embedding-3-small", input=["one", "two"], extra_headers=session("e")
    )

    for row in wait_rows(ledger, "r", 2):
        assert (row["input_tokens"], row["output_tokens"]) == (known.input_tokens, known.output_tokens)
        assert row["cost_usd"] == pytest.approx((known.input_tokens * 2.0 + known.output_tokens * 8.0) / M)
    (row,) = wait_rows(ledger, "e")
    assert (row["input_tokens"], row["output_tokens"]) == (embedded.usage.prompt_tokens, 0)
    assert row["cost_usd"] == pytest.approx(embedded.usage.prompt_tokens * 0.02 / M)


def test_without_upstream_usage_tokens_are_counted_locally_and_marked_estimated(proxy, fake_upstream, ledger):
    fake_upstream.behaviour.omit_usage = True
    plain = oai(proxy).chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=session("o"))
    assert plain.usage is None
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in oai(proxy).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=session("o")
        )
        if chunk.choices
    )
    events = claude(proxy).messages.create(
        model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES, stream=True, extra_headers=session("a")
    )  # raw events: the SDK's stream helper needs the usage this upstream leaves out
    claude_text = "".join(e.delta.text for e in events if e.type == "content_block_delta")

    prompt = count_messages(MESSAGES, "gpt-4o")
    for row in wait_rows(ledger, "o", 2):
        assert row["estimated"] == 1
        assert (row["input_tokens"], row["output_tokens"]) == (prompt, count_tokens(text, "gpt-4o"))
        assert row["cost_usd"] == pytest.approx((prompt * 2.5 + count_tokens(text) * 10.0) / M)
    (row,) = wait_rows(ledger, "a")
    assert row["estimated"] == 1 and row["output_tokens"] == count_tokens(claude_text) > 0
    assert row["input_tokens"] == count_messages(MESSAGES, "claude-haiku-4-5")
    estimated = {"caller": "default", "upstream": "up-openai"}
    assert proxy.metric("agent_proxy_usage_estimated_requests_total", estimated) == 2


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_abandoned_stream_is_accounted_for_what_was_generated(proxy, ledger, provider):
    long_answer = {**session(provider), "x-mock-reply-words": "40000"}
    if provider == "openai":
        stream = oai(proxy).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=long_answer
        )
        for index, _ in enumerate(stream):
            if index == 5:
                break
        stream.close()
    else:
        with claude(proxy).messages.stream(
            model="claude-sonnet-4-5", max_tokens=50_000, messages=MESSAGES, extra_headers=long_answer
        ) as events:
            for index, _ in enumerate(events.text_stream):
                if index == 5:
                    break

    (row,) = wait_rows(ledger, provider)
    assert row["outcome"] == "client_gone" and row["estimated"] == 1
    assert 5 <= row["output_tokens"] < 40_000
    if provider == "anthropic":  # message_start carried the exact prompt count
        assert row["input_tokens"] == math.ceil(len("hi there") / 4) + 3
    else:
        assert row["input_tokens"] == count_messages(MESSAGES, "gpt-4o")
    assert row["cost_usd"] > 0


def test_unknown_models_are_unpriced_and_policy_prices_apply(proxy, ledger):
    client = oai(proxy)
    client.chat.completions.create(model="mystery-model", messages=MESSAGES, extra_headers=session("u"))
    client.chat.completions.create(model="house-model", messages=MESSAGES, extra_headers=session("h"))
    (unpriced,) = wait_rows(ledger, "u")
    assert unpriced["cost_usd"] is None and unpriced["model_priced"] is None and unpriced["output_tokens"] == 12
    assert proxy.metric("agent_proxy_unpriced_requests_total", {"caller": "default", "upstream": "up-openai"}) == 1
    assert tokens_metric(proxy, "other", "output") == 12
    assert cost_metric(proxy, "other") == 0
    (house,) = wait_rows(ledger, "h")
    assert house["cost_usd"] == pytest.approx((house["input_tokens"] * 0.5 + 12 * 1.5) / M)


def test_failed_requests_get_a_row_without_tokens_and_unidentified_ones_none(proxy, fake_upstream, ledger):
    bad = openai.OpenAI(base_url=proxy.openai_base_url, api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=session("x"))
    fake_upstream.behaviour.fault = "status_429"
    with pytest.raises(openai.RateLimitError):
        oai(proxy).chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=session("x"))
    (limited,) = wait_rows(ledger, "x", 1)  # the bad key was counted and logged, not written
    assert (limited["status"], limited["caller"]) == (429, "demo")
    assert limited["input_tokens"] is None and limited["cost_usd"] is None and limited["estimated"] == 0
    assert proxy.metric("agent_proxy_auth_failures_total", {"reason": "unknown_key"}) == 1
    assert proxy.metric("agent_proxy_unpriced_requests_total", {"caller": "default", "upstream": "up-openai"}) == 0


def test_usage_off_on_a_route_writes_no_rows(proxy_factory, fake_upstream, ledger):
    policy = basic_policy(fake_upstream.url, f"ledger: {{path: {ledger}, flush_interval_ms: 20}}").replace(
        "upstream: up-openai}", "upstream: up-openai, stages: {usage: {mode: 'off'}}}"
    )
    proxy = proxy_factory(policy)
    oai(proxy).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=session("n"))
    claude(proxy).messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES, extra_headers=session("n"))
    wait_rows(ledger, "n")
    assert [r["route"] for r in ledger_rows(ledger)] == ["anthropic"]
    assert "stream_options" not in fake_upstream.last("/v1/chat/completions").json()
    wait_for(lambda: proxy.metric("agent_proxy_requests_total", {"route": "openai", "upstream": "up-openai",
                                                                  "status_class": "2xx"}) == 1)  # fmt: skip

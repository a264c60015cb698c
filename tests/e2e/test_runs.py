"""Agent runs through the real SDKs: per-run limits and the loop guard, on the memory and the Redis store."""

from __future__ import annotations

import uuid

import anthropic
import openai
import pytest

from tests.fixtures.proxy_server import DEMO_KEY, basic_policy

SYSTEM = {"role": "system", "content": "You are a research agent."}


@pytest.fixture(params=["memory", "redis"])
def runs_proxy(request, proxy_factory, fake_upstream):
    """`runs_proxy(runs_yaml)`: a proxy with `stages.runs` set, on either store."""
    state = ""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        state = f"state: {{backend: redis, redis_url: '{server.url}', key_prefix: 'r{uuid.uuid4().hex[:10]}:'}}\n"

    def start(runs: str):
        return proxy_factory(basic_policy(fake_upstream.url, state + f"stages:\n  runs: {runs}\n"))

    return start


def oai(proxy, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=retries)


def ask(client: openai.OpenAI, messages: list, **kwargs):
    return client.chat.completions.create(model="gpt-4o-mini", messages=messages, **kwargs)


def tool_round(n: int, arguments: str) -> list[dict]:
    call = {"id": f"call_{n}", "type": "function", "function": {"name": "search", "arguments": arguments}}
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"call_{n}", "content": "no results"},
    ]


def test_the_loop_guard_trips_on_the_repeat_after_max_repeats(runs_proxy, fake_upstream):
    proxy = runs_proxy("{loop_guard: {max_repeats: 3, window_s: 600}}")
    client = oai(proxy, retries=2)
    messages = [SYSTEM, {"role": "user", "content": "find the report"}]
    for _ in range(3):
        ask(client, messages)  # stream or not is the same request
    with pytest.raises(openai.RateLimitError) as looped:
        ask(client, messages, stream=False, user="someone")
    assert looped.value.code == "agent_loop_detected"
    assert "same request 3 times within 600s" in looped.value.message
    assert looped.value.response.headers["x-should-retry"] == "false"
    assert fake_upstream.count("/v1/chat/completions") == 3  # refused once, and not retried by the SDK
    ask(client, [*messages, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "go on"}])
    # Another run (named by the agent) may send the same request.
    ask(client, messages, extra_headers={"x-agent-run-id": "run-2"})
    reason = {"caller": "default", "reason": "loop_request", "mode": "enforce"}
    assert proxy.metric("agent_proxy_limit_refusals_total", reason) == 1


def test_the_loop_guard_sees_the_same_tool_call_in_a_growing_conversation(runs_proxy):
    proxy = runs_proxy("{loop_guard: {max_repeats: 3, window_s: 600}}")
    client = oai(proxy)
    messages = [SYSTEM, {"role": "user", "content": "find the report"}]
    for n in range(3):  # each request is new (the history grows), the model's tool call is not
        arguments = '{"q": "report", "page": 1}' if n % 2 else '{"page": 1, "q": "report"}'
        messages += tool_round(n, arguments)
        ask(client, messages)
    messages += tool_round(3, '{"q": "report", "page": 1}')
    with pytest.raises(openai.RateLimitError) as looped:
        ask(client, messages)
    assert "same tool call 3 times" in looped.value.message
    messages[-2:] = tool_round(4, '{"q": "report", "page": 2}')  # a different call goes through
    ask(client, messages)


def test_a_run_has_its_own_request_limit(runs_proxy):
    proxy = runs_proxy("{max_requests: 2}")
    client = oai(proxy)
    first = [SYSTEM, {"role": "user", "content": "plan a trip"}]
    ask(client, first)
    ask(client, [*first, {"role": "assistant", "content": "where to?"}, {"role": "user", "content": "Lisbon"}])
    with pytest.raises(openai.RateLimitError) as spent:
        ask(client, [*first, {"role": "assistant", "content": "when?"}, {"role": "user", "content": "May"}])
    assert spent.value.code == "run_limit_exceeded" and "limit of 2 requests" in spent.value.message
    ask(client, [SYSTEM, {"role": "user", "content": "plan another trip"}])  # a new conversation is a new run
    for run in ("a", "a"):
        ask(client, [SYSTEM, {"role": "user", "content": "plan a trip"}], extra_headers={"x-agent-run-id": run})


def test_a_run_has_token_and_cost_limits_on_anthropic_too(runs_proxy, fake_upstream):
    proxy = runs_proxy("{max_tokens: 300}")
    client = anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0)
    messages = [{"role": "user", "content": "summarise the logs"}]
    for _ in range(3):  # about 100 on the estimate, a few dozen really used
        client.messages.create(model="claude-mock-1", max_tokens=100, messages=messages, system="agent")
        messages += [{"role": "assistant", "content": "done"}, {"role": "user", "content": "again"}]
    used = 0
    with pytest.raises(anthropic.RateLimitError) as spent:
        for _ in range(20):
            reply = client.messages.create(model="claude-mock-1", max_tokens=100, messages=messages, system="agent")
            used += reply.usage.input_tokens + reply.usage.output_tokens
            messages += [{"role": "assistant", "content": "done"}, {"role": "user", "content": "again"}]
    assert "limit of 300 tokens" in spent.value.body["error"]["message"]
    assert used > 0


def test_the_loop_guard_in_shadow_records_without_refusing(runs_proxy):
    proxy = runs_proxy("{loop_guard: {max_repeats: 1, mode: shadow}, max_requests: 10}")
    client = oai(proxy)
    messages = [SYSTEM, {"role": "user", "content": "same again"}]
    for _ in range(3):
        ask(client, messages)
    reason = {"caller": "default", "reason": "loop_request", "mode": "shadow"}
    assert proxy.metric("agent_proxy_limit_refusals_total", reason) == 2


def test_requests_without_a_conversation_belong_to_a_run_only_when_named(runs_proxy):
    proxy = runs_proxy("{max_requests: 1}")
    client = oai(proxy)
    for _ in range(2):  # no user turn to recognise a conversation by: no run, no run limit
        ask(client, [SYSTEM])
    named = {"x-agent-run-id": "batch-7"}
    client.embeddings.create(model="text-embedding-3-small", input="x", extra_headers=named)
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="text-embedding-3-small", input="y", extra_headers=named)

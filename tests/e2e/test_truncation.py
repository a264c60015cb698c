"""Truncation through the real proxy with the real SDKs, against the fake upstream: what the upstream
receives, the header and the log line the caller's side sees, the 400 for a turn that cannot fit, shadow mode."""

from __future__ import annotations

import logging
from pathlib import Path

import anthropic
import openai
import orjson
import pytest

from proxy.accounting.tokens import count_request
from proxy.protocols import PROTOCOLS
from tests.fixtures.http import post
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

BUDGET = 300
TRUNCATION = f"""
stages:
  truncation: {{per_model: {{"gpt-4o*": {BUDGET}, "claude-*": {BUDGET}}}, margin_ratio: 0}}
"""
OLD = "an older question about the weather in many words " * 30  # about 270 tokens
CALLS = [
    {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "a"}'}},
    {"id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "b"}'}},
]
OPENAI_MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": OLD},
    {"role": "assistant", "content": "It was sunny."},
    {"role": "user", "content": OLD},
    {"role": "assistant", "content": None, "tool_calls": CALLS},
    {"role": "tool", "tool_call_id": "call_b", "content": "b result"},
    {"role": "tool", "tool_call_id": "call_a", "content": "a result"},
    {"role": "user", "content": "And now?"},
]
USE = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "now"}}
ANTHROPIC_MESSAGES = [
    {"role": "user", "content": OLD},
    {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}, USE]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
    {"role": "assistant", "content": "It was sunny."},
    {"role": "user", "content": OLD},
    {"role": "assistant", "content": "Still sunny."},
    {"role": "user", "content": "And now?"},
]


@pytest.fixture
def proxy(proxy_factory, fake_upstream):
    return proxy_factory(basic_policy(fake_upstream.url, TRUNCATION))


def _log_fields(caplog, request_id: str) -> dict:
    wait_for(lambda: any(getattr(r, "fields", {}).get("request_id") == request_id for r in caplog.records))
    (fields,) = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("request_id") == request_id]
    return fields


def test_openai_oldest_turns_go_and_the_tool_round_stays_whole(proxy, oai, fake_upstream, caplog):
    caplog.set_level(logging.INFO, logger="agent_proxy")
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=OPENAI_MESSAGES, extra_headers={"x-request-id": "trunc-1"}
    )
    assert raw.parse().choices[0].message.content
    sent = fake_upstream.last("/v1/chat/completions").json()
    assert sent["messages"] == [OPENAI_MESSAGES[0], *OPENAI_MESSAGES[4:]]  # system kept, both results with the call
    assert raw.headers["x-agent-proxy-truncated"] == "3"
    before = count_request(PROTOCOLS["openai"], {"messages": OPENAI_MESSAGES}, "gpt-4o")
    after = count_request(PROTOCOLS["openai"], sent, "gpt-4o")
    assert after <= BUDGET < before
    fields = _log_fields(caplog, "trunc-1")
    assert f"truncation:truncated:3msgs:{before - after}tokens" in fields["decisions"]
    labels = {"stage": "truncation", "decision": "truncated", "mode": "enforce"}
    wait_for(lambda: proxy.metric("agent_proxy_stage_decisions_total", labels) == 1)
    assert proxy.metric("agent_proxy_truncated_tokens_total", {"route": "openai", "mode": "enforce"}) == before - after


def test_openai_streamed_request_is_trimmed_too(oai, fake_upstream):
    with oai.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=OPENAI_MESSAGES, stream=True
    ) as response:
        assert response.headers["x-agent-proxy-truncated"] == "3"
        assert "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
    assert fake_upstream.last("/v1/chat/completions").json()["messages"][0]["role"] == "system"


def test_anthropic_keeps_the_system_and_opens_with_the_user(claude, fake_upstream):
    raw = claude.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=50, system="You are terse.", messages=ANTHROPIC_MESSAGES
    )
    assert raw.parse().content[0].text
    sent = fake_upstream.last("/v1/messages").json()
    # the tool loop's turn went whole: 299 tokens are left, the oldest kept message is the user's
    assert sent["messages"] == ANTHROPIC_MESSAGES[-3:] and sent["system"] == "You are terse."
    assert raw.headers["x-agent-proxy-truncated"] == "4"


def test_a_newest_turn_over_budget_is_context_length_exceeded(oai, claude, fake_upstream):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="gpt-4o", messages=[*OPENAI_MESSAGES, {"role": "user", "content": OLD * 2}])
    assert err.value.code == "context_length_exceeded" and f"budget of {BUDGET}" in err.value.message
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model="claude-opus-4-5", max_tokens=10, messages=[{"role": "user", "content": OLD * 2}])
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert fake_upstream.count("/v1/chat/completions") == fake_upstream.count("/v1/messages") == 0


def test_a_prompt_within_budget_is_forwarded_byte_for_byte(proxy, fake_upstream):
    body = b'{"model": "gpt-4o",  "messages": [{"role": "user", "content": "' + b"word " * 100 + b'"}]}'
    response = post(
        proxy.openai_base_url + "/chat/completions",
        body,
        {"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"},
    )
    assert response.status == 200 and "x-agent-proxy-truncated" not in response.headers
    assert fake_upstream.last("/v1/chat/completions").body == body  # counted, not cut, not re-serialised


def test_models_without_a_budget_pass_untouched(oai, fake_upstream):
    oai.chat.completions.create(model="local-llama", messages=OPENAI_MESSAGES)
    assert fake_upstream.last("/v1/chat/completions").json()["messages"] == OPENAI_MESSAGES


def test_shadow_mode_records_the_cut_and_leaves_the_body(proxy_factory, fake_upstream):
    shadow = TRUNCATION.replace("{per_model", "{mode: shadow, per_model")
    proxy = proxy_factory(basic_policy(fake_upstream.url, shadow))
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=OPENAI_MESSAGES)
    assert "x-agent-proxy-truncated" not in raw.headers
    assert orjson.loads(fake_upstream.last("/v1/chat/completions").body)["messages"] == OPENAI_MESSAGES
    labels = {"stage": "truncation", "decision": "truncated", "mode": "shadow"}
    wait_for(lambda: proxy.metric("agent_proxy_stage_decisions_total", labels) == 1)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": OLD * 2}])  # not refused
    refused = {"stage": "truncation", "decision": "refused:context_length_exceeded", "mode": "shadow"}
    wait_for(lambda: proxy.metric("agent_proxy_stage_decisions_total", refused) == 1)


def test_the_example_policy_trims_on_its_small_route_and_only_records_on_its_trial_route(proxy_factory):
    text = (Path(__file__).resolve().parents[2] / "policies/examples/truncation.yaml").read_text()
    proxy = proxy_factory(text)
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "old " * 300},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and now?"},
    ]
    small = openai.OpenAI(base_url=proxy.url + "/small/v1", api_key="demo-key-1", max_retries=0)
    raw = small.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert raw.headers["x-agent-proxy-truncated"] == "2"
    assert raw.parse().choices[0].message.content.startswith("Mock answer to: and now?")
    trial = openai.OpenAI(base_url=proxy.url + "/trial/v1", api_key="demo-key-1", max_retries=0)
    raw = trial.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert "x-agent-proxy-truncated" not in raw.headers

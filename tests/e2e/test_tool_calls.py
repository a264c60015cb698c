"""Tool calls proposed by the LLM, governed: through the real proxy with the real SDKs and a fake upstream
that proposes whatever functions the test names, whatever tools the request offered."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy
from tests.fixtures.tool_call_upstream import ARGUMENTS, ToolCallUpstream
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "what is the weather in Paris?"}]
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("get_weather", "delete_repo")
]
METRIC = "agent_proxy_tool_calls_proposed_total"


def policy(url: str, stage: str) -> str:
    return basic_policy(
        url,
        f"""
callers:
  default: {{}}
  demo: {{tools: ["fn:get_weather", "files:read_*"]}}
stages:
  tool_calls: {stage}
""",
    )


@pytest.fixture
def upstream() -> Iterator[ToolCallUpstream]:
    with ToolCallUpstream() as fake:
        yield fake


@pytest.fixture
def deny(proxy_factory, upstream):
    return proxy_factory(policy(upstream.url, "{action: deny}"))


def oai(proxy, key: str = DEMO_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=key, max_retries=0)


def claude(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0)


def count(proxy, decision: str, route: str = "openai") -> float:
    return proxy.metric(METRIC, {"route": route, "decision": decision})


# ---- OpenAI chat completions


def test_an_allowed_call_goes_through_whole_and_streamed(deny, upstream):
    client = oai(deny)
    answer = client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)
    call = answer.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", ARGUMENTS)
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, stream=True))
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or "" for c in chunks if c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == ARGUMENTS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    wait_for(lambda: count(deny, "allowed") == 2)


def test_a_forbidden_call_is_a_403_the_sdk_does_not_retry(deny, upstream):
    upstream.script.calls = ["delete_repo"]
    with pytest.raises(openai.PermissionDeniedError) as caught:
        oai(deny).chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)
    assert caught.value.status_code == 403
    assert caught.value.code == "tool_not_allowed"
    assert "delete_repo" in caught.value.message
    wait_for(lambda: count(deny, "denied") == 1)


def test_a_stream_ends_with_the_error_event_before_any_byte_of_the_forbidden_call(deny, upstream):
    upstream.script.calls = ["get_weather", "delete_repo"]
    seen = []
    stream = oai(deny).chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, stream=True)
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            seen.append(chunk)
    assert "delete_repo" in caught.value.message
    calls = [
        call for c in seen if c.choices and c.choices[0].delta.tool_calls for call in c.choices[0].delta.tool_calls
    ]
    assert calls and all(call.index == 0 for call in calls)  # the allowed call, and nothing of the second
    assert calls[0].function.name == "get_weather"
    wait_for(lambda: count(deny, "denied") == 1 and count(deny, "allowed") == 1)


def test_the_legacy_function_call_is_governed_too(deny, upstream):
    upstream.script.calls = ["delete_repo"]
    functions = [{"name": "delete_repo", "parameters": {"type": "object"}}]
    with pytest.raises(openai.PermissionDeniedError):
        oai(deny).chat.completions.create(model="m", messages=MESSAGES, functions=functions)
    stream = oai(deny).chat.completions.create(model="m", messages=MESSAGES, functions=functions, stream=True)
    seen = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            seen.append(chunk)
    assert not any(c.choices and c.choices[0].delta.function_call for c in seen)


def test_the_callers_profile_decides(deny, upstream):
    """The ops caller's profile (`default`) lists no functions: even get_weather is refused to it."""
    with pytest.raises(openai.PermissionDeniedError):
        oai(deny, ADMIN_KEY).chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)


def test_flag_marks_the_answer_logs_and_counts(proxy_factory, upstream, caplog):
    caplog.set_level(logging.INFO, logger="agent_proxy")
    proxy = proxy_factory(policy(upstream.url, "{action: flag}"))
    upstream.script.calls = ["delete_repo"]
    raw = oai(proxy).chat.completions.with_raw_response.create(model="m", messages=MESSAGES, tools=TOOLS)
    assert raw.headers["x-agent-proxy-tool-flagged"] == "delete_repo"
    assert raw.parse().choices[0].message.tool_calls[0].function.name == "delete_repo"
    chunks = list(oai(proxy).chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, stream=True))
    assert chunks[1].choices[0].delta.tool_calls[0].function.name == "delete_repo"
    wait_for(lambda: count(proxy, "flagged") == 2)
    flagged = [r.fields for r in caplog.records if r.name == "agent_proxy.tool_calls"]
    assert len(flagged) == 2 and all(f["functions"] == ["delete_repo"] for f in flagged)
    assert all(f["decision"] == "flagged" for f in flagged)


def test_allow_lets_it_through_and_counts_it_as_unlisted(proxy_factory, upstream):
    proxy = proxy_factory(policy(upstream.url, "{action: allow}"))
    upstream.script.calls = ["delete_repo"]
    raw = oai(proxy).chat.completions.with_raw_response.create(model="m", messages=MESSAGES, tools=TOOLS)
    assert "x-agent-proxy-tool-flagged" not in raw.headers
    assert raw.parse().choices[0].message.tool_calls[0].function.name == "delete_repo"
    wait_for(lambda: count(proxy, "unlisted") == 1)


def test_shadow_mode_records_what_it_would_have_denied(proxy_factory, upstream):
    proxy = proxy_factory(policy(upstream.url, "{action: deny, mode: shadow}"))
    upstream.script.calls = ["delete_repo"]
    answer = oai(proxy).chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)
    assert answer.choices[0].message.tool_calls[0].function.name == "delete_repo"
    chunks = list(oai(proxy).chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, stream=True))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    wait_for(lambda: count(proxy, "shadow_denied") == 2)
    assert count(proxy, "denied") == 0
    decisions = "agent_proxy_stage_decisions_total"
    assert proxy.metric(decisions, {"stage": "tool_calls", "decision": "denied", "mode": "shadow"}) == 2


def test_the_request_offers_only_allowed_functions(proxy_factory, upstream):
    proxy = proxy_factory(policy(upstream.url, "{action: deny, filter_request_tools: true}"))
    oai(proxy).chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, parallel_tool_calls=False)
    sent = upstream.script.requests[-1]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert sent["parallel_tool_calls"] is False
    only_forbidden = TOOLS[1:]
    oai(proxy).chat.completions.create(model="m", messages=MESSAGES, tools=only_forbidden, tool_choice="required")
    sent = upstream.script.requests[-1]
    assert "tools" not in sent and "tool_choice" not in sent  # an empty list would be the upstream's 400
    before = len(upstream.script.requests)
    forced = {"type": "function", "function": {"name": "delete_repo"}}
    with pytest.raises(openai.PermissionDeniedError) as caught:
        oai(proxy).chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, tool_choice=forced)
    assert caught.value.code == "tool_not_allowed"
    assert len(upstream.script.requests) == before  # refused before it left


# ---- Anthropic messages

ANTHROPIC_TOOLS = [{"name": name, "input_schema": {"type": "object"}} for name in ("get_weather", "delete_repo")]


def test_anthropic_tool_use_allowed_and_denied(deny, upstream):
    client = claude(deny)
    message = client.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES, tools=ANTHROPIC_TOOLS)
    assert (message.content[0].name, message.content[0].input) == ("get_weather", ARGUMENTS)
    with client.messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES, tools=ANTHROPIC_TOOLS) as s:
        assert s.get_final_message().content[0].input == ARGUMENTS
    upstream.script.calls = ["delete_repo"]
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES, tools=ANTHROPIC_TOOLS)
    assert caught.value.status_code == 403 and "delete_repo" in caught.value.message
    seen = []
    with (
        pytest.raises(anthropic.APIStatusError) as streamed,
        client.messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES, tools=ANTHROPIC_TOOLS) as s,
    ):
        for event in s:
            seen.append(event)
    assert "delete_repo" in str(streamed.value)
    assert [e.type for e in seen] == ["message_start"]  # the tool_use block never reached the caller
    wait_for(lambda: count(deny, "denied", "anthropic") == 2 and count(deny, "allowed", "anthropic") == 2)


def test_anthropic_request_tools_filtered(proxy_factory, upstream):
    proxy = proxy_factory(policy(upstream.url, "{filter_request_tools: true}"))
    claude(proxy).messages.create(model="claude-x", max_tokens=64, messages=MESSAGES, tools=ANTHROPIC_TOOLS)
    assert [t["name"] for t in upstream.script.requests[-1]["tools"]] == ["get_weather"]


def test_the_example_policy_does_what_its_header_says(proxy_factory):
    text = (Path(__file__).resolve().parents[2] / "policies/examples/tool_calls.yaml").read_text()
    proxy = proxy_factory(text)
    weather = [{"role": "user", "content": "weather in Paris?"}]
    forbidden_first = TOOLS[::-1]
    with pytest.raises(openai.PermissionDeniedError) as caught:
        oai(proxy).chat.completions.create(model="gpt-4o-mini", messages=weather, tools=forbidden_first)
    assert caught.value.code == "tool_not_allowed" and "delete_repo" in caught.value.message
    answer = oai(proxy).chat.completions.create(model="gpt-4o-mini", messages=weather, tools=TOOLS)
    assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"
    ops = oai(proxy, "ops-key-1").chat.completions.create(model="gpt-4o-mini", messages=weather, tools=forbidden_first)
    assert ops.choices[0].message.tool_calls[0].function.name == "delete_repo"

"""Proposed calls read from each wire format, and the gate that holds a stream's call parts until a name is known."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.auth.permissions import Permissions
from proxy.policy.schema import CallerProfile
from proxy.protocols import PROTOCOLS
from proxy.protocols.sse import SSEEvent
from proxy.tools.proposed import CallGate, FunctionRules, Verdicts
from proxy.tools.proposed_config import ToolCallsConfig

OPENAI, ANTHROPIC = PROTOCOLS["openai"], PROTOCOLS["anthropic"]


def rules(**config: Any) -> FunctionRules:
    profiles = {
        "default": Permissions(CallerProfile()),
        "agent": Permissions(CallerProfile(tools=["fn:get_*", "files:read_*"])),
        "all": Permissions(CallerProfile(tools=["fn"])),
        "files": Permissions(CallerProfile(tools=["files:read_*"])),
    }
    return FunctionRules(ToolCallsConfig(**config), profiles)


def test_function_rules():
    r = rules(allow=["ping"])
    assert r.allows("agent", "get_weather") and not r.allows("agent", "delete_repo")
    assert r.allows("default", "ping") and not r.allows("default", "get_weather")
    assert r.allows("all", "anything") and not r.allows("all", "")
    assert not r.allows("unknown-profile", "get_weather") and not r.allows(None, "get_weather")
    assert not r.allows("files", "read_file")  # another namespace's tools are not functions...
    assert rules(namespace="files").allows("files", "read_file")  # ...unless the functions are that server's tools
    assert not rules(namespace=None).allows("agent", "get_weather")


def chat(delta: dict[str, Any]) -> SSEEvent:
    return SSEEvent.from_json({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})


def call(index: int, name: str | None = None, arguments: str = "") -> SSEEvent:
    function = {"arguments": arguments} | ({"name": name} if name is not None else {})
    return chat({"tool_calls": [{"index": index, "function": function}]})


def gate(action: str = "deny", max_events: int = 4) -> CallGate:
    return CallGate(Verdicts(action, lambda name: name == "get_weather"), max_events, 1 << 20)  # type: ignore[arg-type]


def feed(g: CallGate, protocol, events: list[SSEEvent]) -> list[SSEEvent]:
    out: list[SSEEvent] = []
    for event in events:
        out += g.event(event, protocol.event_tool_calls(event))
    return out + g.end()


def test_openai_stream_passes_allowed_calls_untouched():
    events = [chat({"role": "assistant"}), call(0, "get_weather"), call(0, None, '{"a"'), call(0, None, ":1}")]
    g = gate()
    assert feed(g, OPENAI, events) == events
    assert g.denied is None and g.verdicts.decisions() == ["allowed"]


def test_openai_stream_denied_at_the_first_part_of_the_call():
    events = [call(0, "get_weather"), call(1, "delete_repo"), call(1, None, "{}")]
    g = gate()
    assert feed(g, OPENAI, events) == events[:1]
    assert g.denied == "delete_repo" and g.verdicts.decisions() == ["allowed", "denied"]


def test_a_name_in_pieces_is_judged_as_the_sdks_assemble_it():
    g = gate()
    first = call(0, "get_weather")
    assert g.event(first, OPENAI.event_tool_calls(first)) == [first]
    piece = call(0, "_and_delete")
    assert g.event(piece, OPENAI.event_tool_calls(piece)) == []
    assert g.denied == "get_weather_and_delete"


def test_arguments_before_the_name_are_held_then_released_in_order():
    events = [call(0, None, '{"a"'), chat({"content": "x"}), call(0, "get_weather", ":1}")]
    g = gate()
    assert g.event(events[0], OPENAI.event_tool_calls(events[0])) == []
    assert g.event(events[1], OPENAI.event_tool_calls(events[1])) == []
    assert g.held == 2
    assert g.event(events[2], OPENAI.event_tool_calls(events[2])) == events


@pytest.mark.parametrize(("action", "released"), [("deny", 0), ("flag", 5)])
def test_a_call_that_stays_unnamed_past_the_bound_is_judged_unnamed(action, released):
    events = [call(0, None, str(i)) for i in range(5)]
    g = gate(action, max_events=4)
    assert len(feed(g, OPENAI, events)) == released
    assert g.verdicts.refused == {("choice", 0, "tool", 0): ""}


def test_openai_legacy_function_call_and_responses_items():
    legacy = chat({"function_call": {"name": "delete_repo", "arguments": ""}})
    assert [(p.key, p.name) for p in OPENAI.event_tool_calls(legacy)] == [(("choice", 0, "function"), "delete_repo")]
    added = SSEEvent.from_json(
        {"type": "response.output_item.added", "output_index": 1, "item": {"type": "function_call", "name": "x"}},
        event="response.output_item.added",
    )
    delta = SSEEvent.from_json({"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{"})
    text = SSEEvent.from_json({"type": "response.output_text.delta", "output_index": 0, "delta": "function_call"})
    assert [(p.key, p.name) for p in OPENAI.event_tool_calls(added)] == [(("resp", 1), "x")]
    assert [(p.key, p.name) for p in OPENAI.event_tool_calls(delta)] == [(("resp", 1), None)]
    assert OPENAI.event_tool_calls(text) == []
    body = {
        "choices": [{"message": {"tool_calls": [{"type": "function", "function": {"name": "a"}}]}}],
        "output": [{"type": "function_call", "name": "b"}, {"type": "message", "content": []}],
    }
    assert OPENAI.body_tool_calls(body) == ["a", "b"]


def test_anthropic_tool_use():
    start = SSEEvent.from_json(
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "name": "delete_repo"}},
        event="content_block_start",
    )
    delta = SSEEvent.from_json(
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{"}},
        event="content_block_delta",
    )
    g = gate()
    assert feed(g, ANTHROPIC, [start, delta]) == [] and g.denied == "delete_repo"
    body = {"content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "name": "get_weather", "input": {}}]}
    assert ANTHROPIC.body_tool_calls(body) == ["get_weather"]
    smuggled = {"type": "message_start", "message": {"content": [{"type": "tool_use", "name": "delete_repo"}]}}
    g = gate()
    assert feed(g, ANTHROPIC, [SSEEvent.from_json(smuggled, event="message_start")]) == []
    assert g.denied == "delete_repo"


def test_filtering_request_tools():
    allowed = lambda name: name == "get_weather"  # noqa: E731
    body = {
        "tools": [
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "function", "function": {"name": "delete_repo"}},
            {"type": "web_search"},
        ],
        "functions": [{"name": "delete_repo"}],
        "function_call": "auto",
    }
    new, removed = OPENAI.filter_request_tools(body, allowed)
    assert removed == ["delete_repo", "delete_repo"]
    assert new == {"tools": body["tools"][::2]}
    responses = {"tools": [{"type": "function", "name": "delete_repo"}], "tool_choice": "auto"}
    assert OPENAI.filter_request_tools(responses, allowed) == ({}, ["delete_repo"])
    assert OPENAI.filter_request_tools({"tools": body["tools"][:1]}, allowed) == (None, [])
    server_tool = {"type": "web_search_20250305", "name": "web_search"}
    claude = {"tools": [{"name": "delete_repo"}, server_tool], "tool_choice": {"type": "tool", "name": "delete_repo"}}
    assert ANTHROPIC.forced_function(claude) == "delete_repo"
    assert ANTHROPIC.filter_request_tools(claude, allowed)[0] == {
        "tools": [server_tool],
        "tool_choice": claude["tool_choice"],
    }

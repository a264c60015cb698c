"""Truncation: after every trim the conversation is valid for its provider and within budget by the tokenizer.

Conversations are generated (hypothesis) with tool calls, parallel tool calls and Anthropic
tool blocks; each is trimmed at budgets from just under its size down to almost nothing, and
each result is checked by rules written here independently of the adapters' turns.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from proxy.accounting.tokens import count_fixed, count_message, count_request
from proxy.protocols import PROTOCOLS
from proxy.truncation.budget import context_window, prompt_budget
from proxy.truncation.config import TruncationConfig
from proxy.truncation.counts import MessageCounts
from proxy.truncation.trim import trim

MODEL = "gpt-4o"
OPENAI = PROTOCOLS["openai"]
ANTHROPIC = PROTOCOLS["anthropic"]

words = st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "tool", "42", "ok", "é"]), max_size=40).map(
    " ".join
)


@st.composite
def openai_bodies(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(words)})
    if draw(st.booleans()):  # OpenAI accepts a conversation that opens with the assistant
        messages.append({"role": "assistant", "content": draw(words)})
    ids = iter(range(10_000))
    for _ in range(draw(st.integers(1, 6))):
        messages.append({"role": "user", "content": draw(words)})
        if draw(st.integers(0, 5)) == 0:
            messages.append({"role": "developer", "content": draw(words)})
        for _ in range(draw(st.integers(0, 3))):  # tool rounds, some of them parallel calls
            calls = [
                {"id": f"call_{next(ids)}", "type": "function", "function": {"name": "f", "arguments": draw(words)}}
                for _ in range(draw(st.integers(1, 3)))
            ]
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            results = [{"role": "tool", "tool_call_id": call["id"], "content": draw(words)} for call in calls]
            messages.extend(draw(st.permutations(results)))
        if draw(st.booleans()):
            messages.append({"role": "assistant", "content": draw(words)})
    return {"model": MODEL, "messages": messages}


@st.composite
def anthropic_bodies(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    ids = iter(range(10_000))
    for _ in range(draw(st.integers(1, 6))):
        messages.append({"role": "user", "content": draw(st.sampled_from([draw(words), [text_block(draw(words))]]))})
        for _ in range(draw(st.integers(0, 3))):
            uses = [
                {"type": "tool_use", "id": f"toolu_{next(ids)}", "name": "f", "input": {"q": draw(words)}}
                for _ in range(draw(st.integers(1, 3)))
            ]
            messages.append({"role": "assistant", "content": [text_block(draw(words)), *uses]})
            results: list[dict[str, Any]] = [
                {"type": "tool_result", "tool_use_id": use["id"], "content": draw(words)} for use in uses
            ]
            if draw(st.booleans()):
                results.append(text_block(draw(words)))
            messages.append({"role": "user", "content": results})
        messages.append({"role": "assistant", "content": [text_block(draw(words))]})
    body: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": messages}
    if draw(st.booleans()):
        body["system"] = [text_block(draw(words))]
    if draw(st.booleans()):
        body["tools"] = [{"name": "f", "input_schema": {"type": "object"}}]
    return body


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def blocks(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict) and b.get("type") == kind] if isinstance(content, list) else []


def check_openai(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    pinned = [m for m in before if m["role"] in ("system", "developer")]
    assert [m for m in after if m["role"] in ("system", "developer")] == pinned
    rest_before = [m for m in before if m["role"] not in ("system", "developer")]
    rest_after = [m for m in after if m["role"] not in ("system", "developer")]
    assert rest_after == rest_before[len(rest_before) - len(rest_after) :]  # the oldest went, the newest stayed
    answered: dict[str, int] = {}
    for position, message in enumerate(after):
        if message["role"] == "tool":
            assert message["tool_call_id"] in answered, "a tool result without its call"
            assert answered[message["tool_call_id"]] < position
        for call in message.get("tool_calls") or ():
            answered[call["id"]] = position
    results = {m["tool_call_id"] for m in after if m["role"] == "tool"}
    assert set(answered) <= results, "a tool call separated from its results"


def check_anthropic(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    assert after == before[len(before) - len(after) :]
    assert after[0]["role"] == "user" and not blocks(after[0], "tool_result"), "the conversation must open with a user"
    for previous, message in pairwise(after):
        used = {b["id"] for b in blocks(previous, "tool_use")}
        results = {b["tool_use_id"] for b in blocks(message, "tool_result")}
        assert results <= used, "a tool_result without its tool_use"
        assert used <= results, "a tool_use separated from its results"


def trimmed_at(protocol: Any, body: dict[str, Any], budget: int) -> dict[str, Any] | None:
    """The body as trimmed to `budget`; None when it cannot be made to fit."""
    conversation = protocol.conversation(body)
    counts = [count_message(m, MODEL, protocol) for m in body["messages"]]
    fixed = count_fixed(MODEL, protocol.system_prompt(body), protocol.request_tools(body), protocol)
    cut = trim(conversation, counts, fixed, budget)
    if not cut.fits:
        newest = next((t for t in reversed(conversation.turns) if t.leads), None)
        if newest is not None:  # refused only when the newest turn that may lead cannot fit
            alone = protocol.with_messages(body, sorted([*conversation.pinned, *newest.indices]))
            assert count_request(protocol, alone, MODEL) > budget
        return None
    if cut.keep is None:
        assert count_request(protocol, body, MODEL) <= budget
        return body
    out = protocol.with_messages(body, cut.keep)
    assert cut.tokens_after == count_request(protocol, out, MODEL) <= budget
    assert cut.tokens_before == count_request(protocol, body, MODEL)
    assert cut.dropped_messages == len(body["messages"]) - len(out["messages"]) > 0
    return out


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(
    ("protocol", "bodies", "check"),
    [(OPENAI, openai_bodies(), check_openai), (ANTHROPIC, anthropic_bodies(), check_anthropic)],
    ids=["openai", "anthropic"],
)
@SETTINGS
@given(data=st.data())
def test_conversations_stay_valid_after_every_trim(protocol, bodies, check, data):
    body = data.draw(bodies)
    total = count_request(protocol, body, MODEL)
    for tenth in range(10, 0, -1):
        out = trimmed_at(protocol, body, total * tenth // 10)
        if out is None:
            break
        check(body["messages"], out["messages"])
        assert out.get("system") == body.get("system") and out.get("tools") == body.get("tools")


def test_parallel_tool_results_go_with_their_call():
    calls = [{"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in ("a", "b")]
    messages = [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "old " * 300},
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "b", "content": "B " * 200},
        {"role": "tool", "tool_call_id": "a", "content": "A"},
        {"role": "user", "content": "new question"},
    ]
    conversation = OPENAI.conversation({"messages": messages})
    assert conversation.pinned == (0,)
    assert [t.indices for t in conversation.turns] == [(1,), (2, 3, 4), (5,)]
    body = {"model": MODEL, "messages": messages}
    out = trimmed_at(OPENAI, body, count_request(OPENAI, body, MODEL) - 10)
    assert [m["role"] for m in out["messages"]] == ["system", "assistant", "tool", "tool", "user"]
    out = trimmed_at(OPENAI, body, 100)  # the calls are 200 tokens of results: they go together
    assert [m["role"] for m in out["messages"]] == ["system", "user"]


def test_an_anthropic_tool_loop_is_kept_whole_or_refused():
    use = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    messages = [
        {"role": "user", "content": "old " * 200},
        {"role": "assistant", "content": "sure"},
        {"role": "user", "content": "task"},
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x " * 100}]},
    ]
    body = {"model": MODEL, "max_tokens": 5, "system": "be kind", "messages": messages}
    assert [t.leads for t in ANTHROPIC.conversation(body).turns] == [True, True]
    out = trimmed_at(ANTHROPIC, body, 150)
    assert out["messages"] == messages[2:] and out["system"] == "be kind"
    assert trimmed_at(ANTHROPIC, body, 50) is None


def test_a_conversation_that_cannot_lead_is_too_long_rather_than_mangled():
    body = {"model": MODEL, "messages": [{"role": "assistant", "content": "x " * 50}]}
    assert trimmed_at(ANTHROPIC, body, 10) is None


def test_bodies_without_a_chat_are_left_alone():
    assert OPENAI.conversation({"input": "hello"}) is None  # Responses API
    assert OPENAI.conversation({"messages": ["not an object"]}) is None
    assert PROTOCOLS["http"].conversation({"messages": []}) is None


def test_budget_from_policy_then_the_context_window_minus_the_output_cap():
    config = TruncationConfig(per_model={"gpt-4o*": 1000, "claude-*": 2000}, margin_ratio=0)
    assert prompt_budget(config, "gpt-4o-mini", 500) == 1000
    assert prompt_budget(config, "claude-x", 500) == 2000
    assert prompt_budget(config, "gpt-4", 1000) == 8192 - 1000  # from the table
    assert prompt_budget(config, "gpt-4-0613", 0) == 8192  # a dated variant uses its base name
    assert prompt_budget(config, "my-local-model", 0) is None
    assert prompt_budget(config.model_copy(update={"context_windows": False}), "gpt-4", 0) is None
    routed = TruncationConfig(budget_tokens=300)  # the default margin: 5 %
    assert prompt_budget(routed, "anything", 10) == 285 and prompt_budget(routed, None, 10) == 285
    assert context_window("claude-sonnet-4-5-20250929") == 200_000


def test_the_output_cap_comes_from_the_adapter():
    config = TruncationConfig(margin_ratio=0, default_output_tokens=4096)
    openai_cap = OPENAI.output_cap({"max_completion_tokens": 1000, "n": 2}, config.default_output_tokens)
    assert prompt_budget(config, "gpt-4", openai_cap) == 8192 - 2000
    assert ANTHROPIC.output_cap({"max_tokens": 300, "n": 4}, 4096) == 300  # Messages has no choices
    assert ANTHROPIC.output_cap({}, 4096) == 4096


@pytest.mark.parametrize(
    "bad", [{"budget_tokens": 0}, {"per_model": {"gpt-*": -1}}, {"margin_ratio": 0.9}, {"window": 1}]
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValidationError):
        TruncationConfig(**bad)


def test_counts_of_messages_seen_before_come_from_a_bounded_cache():
    counts = MessageCounts(entries=3)
    message = {"role": "user", "content": "hello there"}
    assert counts.count(message, "gpt-4o", OPENAI) == count_message(message, "gpt-4o", OPENAI)
    assert counts.count(dict(message), "gpt-4o", OPENAI) == count_message(message, "gpt-4o", OPENAI)
    assert len(counts) == 1  # the same message: counted once
    assert counts.count(message, "gpt-4", OPENAI) == count_message(message, "gpt-4", OPENAI)  # another encoding
    assert len(counts) == 2
    for n in range(5):
        counts.count({"role": "user", "content": f"message {n}"}, "gpt-4o", OPENAI)
    assert len(counts) == 3
    system, tools = [text_block("rules")], [{"name": "f", "input_schema": {"type": "object"}}]
    assert counts.fixed(MODEL, system, tools, ANTHROPIC) == count_fixed(MODEL, system, tools, ANTHROPIC)
    assert counts.fixed(MODEL, system, None, ANTHROPIC) == count_fixed(MODEL, system, None, ANTHROPIC)

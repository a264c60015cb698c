"""The one-pass readings of the usual request and answer (proxy/protocols/plain.py) say what the general walks say.

Input checks skip the shape check and the slot walk for a prompt `plain_prompt` reads, and
redaction lets through, without building its per-request state, an answer whose
`plain_answer` text the detectors find nothing in. Both are held here to the general
code on bodies that are mostly the usual shape, with one thing or another changed.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.protocols.anthropic import AnthropicProtocol
from proxy.protocols.base import Protocol
from proxy.protocols.openai import OpenAIProtocol
from proxy.safety.config import RedactionConfig
from proxy.safety.content import CompiledRedaction, ExchangeRedaction

OPENAI, ANTHROPIC = OpenAIProtocol(), AnthropicProtocol()
ODD = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 3), st.builds(list), st.builds(dict), st.builds(lambda: ["x"])
)
TEXT = st.text(alphabet="ab @.:=-_s7 9Z\u200b\x07é", max_size=24)
PART = st.fixed_dictionaries({}, optional={"type": st.sampled_from(["text", "tool_result", "image"]), "text": TEXT})
CALLS = st.lists(st.fixed_dictionaries({"function": st.fixed_dictionaries({"name": TEXT, "arguments": TEXT})}))
ROLES = ["user", "assistant", "system", "developer", "function", "tool", "bot", ""]
GONE = object()  # a perturbation's value: the key is removed
VALUE = st.one_of(ODD, TEXT, st.sampled_from(ROLES), st.just(" "), CALLS, st.lists(PART, max_size=2), st.just(GONE))
TOP_KEYS = ["model", "messages", "stream", "instructions", "input", "prompt", "system", "max_tokens", "temperature"]
MESSAGE_KEYS = ["role", "content", "tool_calls", "function_call", "tool_call_id", "name", None]  # None: the whole


def changed(body: dict[str, Any], changes: list[tuple[bool, str | None, int, Any]]) -> dict[str, Any]:
    """`body` with each change made: to a top-level key, or to a key of one message (or the message itself)."""
    for top, key, at, value in changes:
        messages = body.get("messages")
        if top or not isinstance(messages, list) or not messages:
            target, key = body, key if key in TOP_KEYS else "model"
        elif key is None:
            messages[at % len(messages)] = None if value is GONE else value
            continue
        else:
            target = messages[at % len(messages)]
        put(target, key, value)
    return body


def put(target: Any, key: str, value: Any) -> None:
    """One change: `key` set to `value` in `target`, or removed (GONE); nothing when `target` is not a dict."""
    if not isinstance(target, dict):
        return
    if value is GONE:
        target.pop(key, None)
    else:
        target[key] = value


CHANGES = st.lists(
    st.tuples(st.booleans(), st.sampled_from(TOP_KEYS + MESSAGE_KEYS), st.integers(0, 3), VALUE), max_size=2
)
REQUEST = st.builds(
    lambda messages, system, tokens, changes: changed(
        {"model": "m", "max_tokens": tokens, "messages": messages, **system}, changes
    ),
    st.lists(
        st.builds(lambda role, content: {"role": role, "content": content}, st.sampled_from(ROLES[:5]), TEXT),
        min_size=1,
        max_size=4,
    ),
    st.one_of(st.just({}), st.builds(lambda text: {"system": text}, TEXT)),
    st.integers(1, 4096),
    CHANGES,
)
OPENAI_PATHS = st.sampled_from(["/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings"])
ANTHROPIC_PATHS = st.sampled_from(["/v1/messages", "/v1/messages/", "/v1/messages/count_tokens", "/v1/models"])


def slot_texts(protocol: Protocol, body: Any) -> list[Any]:
    slots = protocol.request_text_slots(body)
    assert all(slot.kind == "text" for slot in slots)
    return [slot.get(body) for slot in slots]


@settings(max_examples=400, deadline=None)
@given(REQUEST, OPENAI_PATHS)
def test_an_openai_plain_prompt_has_no_shape_problem_and_is_its_slots(body: Any, path: str) -> None:
    texts = OPENAI.plain_prompt(body)
    if texts is not None:
        assert OPENAI.request_shape_problem(body, path) is None
        assert slot_texts(OPENAI, body) == texts


@settings(max_examples=400, deadline=None)
@given(REQUEST, ANTHROPIC_PATHS)
def test_an_anthropic_plain_prompt_has_no_shape_problem_and_is_its_slots(body: Any, path: str) -> None:
    texts = ANTHROPIC.plain_prompt(body)
    if texts is not None:
        assert ANTHROPIC.request_shape_problem(body, path) is None
        assert slot_texts(ANTHROPIC, body) == texts


def test_the_usual_requests_are_read_in_one_pass() -> None:
    chat = {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    }
    assert OPENAI.plain_prompt(chat) == ["Be brief.", "hi"]
    assert OPENAI.plain_prompt({**chat, "stream": True, "temperature": 0.2}) == ["Be brief.", "hi"]
    messages = {
        "model": "claude-3",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert ANTHROPIC.plain_prompt(messages) == ["Be brief.", "hi"]
    # Anything else goes the general way: a tool message, content parts, a tool call, a Responses body.
    assert OPENAI.plain_prompt({**chat, "messages": [{"role": "tool", "content": "1", "tool_call_id": "c"}]}) is None
    assert (
        OPENAI.plain_prompt({**chat, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        is None
    )
    assert OPENAI.plain_prompt({"model": "gpt-4o", "input": "hi"}) is None
    assert ANTHROPIC.plain_prompt({**messages, "system": [{"type": "text", "text": "Be brief."}]}) is None
    assert Protocol().plain_prompt(chat) is None


# ---- answers

_ANSWER_CHARS = st.text(alphabet="token @.-_sS:=7 9\nAKIX\u00e9", max_size=40)
VALUES = [
    "jane@corp.io",
    "4111 1111 1111 1111",
    "sk-proj-abcdefghijklmnopqrstuv",
    "password: hunter2!",
    "+1 415 555 0100",
]
ANSWER_TEXT = st.one_of(
    _ANSWER_CHARS,
    st.builds(lambda a, value, b: f"{a} {value} {b}", _ANSWER_CHARS, st.sampled_from(VALUES), _ANSWER_CHARS),
)
ANSWER_KEYS = ["choices", "output", "created", "content", "index", "message", "text", "refusal", "tool_calls"]


def answer_changed(body: dict[str, Any], changes: list[tuple[int, str, Any]]) -> dict[str, Any]:
    """`body` with each change made at one level: the body (0), its first choice or block (1), a message (2)."""
    for level, key, value in changes:
        items = body.get("choices", body.get("content"))
        first = items[0] if isinstance(items, list) and items else None
        message = first.get("message") if isinstance(first, dict) else None
        put([body, first, message][level], key, value)
    return body


ANSWER_CHANGES = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(ANSWER_KEYS), st.one_of(VALUE, ANSWER_TEXT)),
    max_size=2,
)
BIG = st.sampled_from([{}, {"created": "BIG"}])  # "BIG": an integer orjson reads as a float, in the bytes
OPENAI_ANSWER = st.builds(
    lambda text, big, changes: answer_changed(
        {"id": "x", **big, "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}, changes
    ),
    ANSWER_TEXT,
    BIG,
    ANSWER_CHANGES,
)
ANTHROPIC_ANSWER = st.builds(
    lambda text, big, changes: answer_changed(
        {"type": "message", **big, "content": [{"type": "text", "text": text}]}, changes
    ),
    ANSWER_TEXT,
    BIG,
    ANSWER_CHANGES,
)
REDACTION = CompiledRedaction.from_config(
    RedactionConfig(output=["email", "phone", "ssn", "credit_card", "iban", "api_key", "password"], action="mask")
)


def held_to_slots(protocol: Protocol, body: Any) -> None:
    text = protocol.plain_answer(body)
    if text is not None:
        slots = protocol.response_text_slots(body)
        assert [slot.kind for slot in slots] == ["text"]
        assert slots[0].get(body) == text


def first_look(protocol: Protocol, raw: bytes, parse: Any = orjson.loads) -> tuple[str | None, bool]:
    """What the redaction stage does first with an answer: its plain text, and whether it goes out as it is."""
    text = CompiledRedaction.plain_text(protocol, raw, "application/json", parse)
    return text, text is not None and REDACTION.output is not None and REDACTION.output.finds_nothing_in(text)


def first_look_changes_nothing(protocol: Protocol, body: Any) -> None:
    """An answer let through is one redact_body gives back as it is, counting nothing; a plain text found to hold
    an anchor, handed on as `anchored`, is redacted as if it had not been searched."""
    # A number orjson reads as a float (redact_body then takes the exact way) changes nothing here.
    raw = orjson.dumps(body).replace(b'"BIG"', b"12345678901234567890123")
    fresh = ExchangeRedaction(REDACTION, "caller")
    expected = fresh.redact_body(protocol, raw, "application/json")
    payload = orjson.loads(raw)  # the stage's parse is the one redact_body gets: `anchored` is that very string
    text, clean = first_look(protocol, raw, lambda _: payload)
    if clean:
        assert expected is raw and fresh.counts() == {}
    elif text is not None:
        told = ExchangeRedaction(REDACTION, "caller")
        told.anchored = text
        assert told.redact_body(protocol, raw, "application/json", lambda _: payload) == expected
        assert told.counts() == fresh.counts()


@settings(max_examples=400, deadline=None)
@given(OPENAI_ANSWER)
def test_an_openai_plain_answer_is_its_one_text_slot(body: Any) -> None:
    held_to_slots(OPENAI, body)
    first_look_changes_nothing(OPENAI, body)


@settings(max_examples=300, deadline=None)
@given(ANTHROPIC_ANSWER)
def test_an_anthropic_plain_answer_is_its_one_text_slot(body: Any) -> None:
    held_to_slots(ANTHROPIC, body)
    first_look_changes_nothing(ANTHROPIC, body)


def test_a_clean_answer_passes_and_one_with_a_value_does_not() -> None:
    def answer(text: str) -> bytes:
        return orjson.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})

    assert first_look(OPENAI, answer("token token token")) == ("token token token", True)
    assert first_look(OPENAI, answer("mail jane@corp.io")) == ("mail jane@corp.io", False)
    assert first_look(OPENAI, b'{"choices": [') == (None, False)
    assert CompiledRedaction.plain_text(OPENAI, answer("token"), "text/plain", orjson.loads) is None
    anthropic = orjson.dumps({"content": [{"type": "text", "text": "token token"}]})
    assert first_look(ANTHROPIC, anthropic) == ("token token", True)

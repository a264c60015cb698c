"""Streams rewritten event by event: every event stays valid JSON of its kind, the text read is exact,
held text is flushed before the event that ends its channel, and a block ends the stream."""

from __future__ import annotations

import itertools
import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import Forbidden
from proxy.protocols import PROTOCOLS
from proxy.protocols.sse import SSEEvent
from proxy.protocols.text_slots import openai_closes, openai_event
from proxy.safety.config import RedactionConfig
from proxy.safety.content import CompiledRedaction, ExchangeRedaction
from proxy.safety.events import StreamRewriter
from proxy.safety.secret_detectors import MAX_SECRET

TEXT = "Mail john.doe@acmecorp.com or call +1 415 555 0132; card 4111 1111 1111 1111. Thanks!"
REDACTED = "Mail [EMAIL] or call [PHONE]; card [CARD]. Thanks!"
CONFIG = RedactionConfig(output=["pii", "api_key", "city"], custom=[{"name": "city", "pattern": "Paris"}])


def _redaction(config: RedactionConfig = CONFIG) -> ExchangeRedaction:
    return ExchangeRedaction(CompiledRedaction.from_config(config), "tenant")


def _split(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted(set(cuts)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _chat_events(pieces: list[str], tool_pieces: list[str] = ()) -> list[SSEEvent]:  # type: ignore[assignment]
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(index: int, delta: dict, finish: str | None = None) -> SSEEvent:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return SSEEvent.from_json({**base, "choices": [choice]})

    events = [chunk(0, {"role": "assistant", "content": ""})]
    events += [chunk(0, {"content": p}) for p in pieces]
    events += [chunk(1, {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in tool_pieces]
    events += [chunk(0, {}, "stop"), chunk(1, {}, "tool_calls"), SSEEvent.build("[DONE]")]
    return [SSEEvent(e.raw) for e in events]


def _run(protocol: str, events: list[SSEEvent], redaction: ExchangeRedaction | None = None) -> list[SSEEvent]:
    rewriter = StreamRewriter(PROTOCOLS[protocol], redaction or _redaction())
    out = [e for event in events for e in rewriter.event(event)]
    return out + rewriter.end()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_openai_chat_stream_is_exact_and_well_formed(data):
    args = '{"to": "jane@corp.io", "city": "Paris"}'
    cuts = data.draw(st.lists(st.integers(0, len(TEXT)), max_size=25))
    tool_cuts = data.draw(st.lists(st.integers(0, len(args)), max_size=10))
    out = _run("openai", _chat_events(_split(TEXT, cuts), _split(args, tool_cuts)))
    text, arguments, finished = "", "", set()
    for event in out[:-1]:
        choice = orjson.loads(event.data)["choices"][0]
        assert choice["index"] not in finished, "text after the choice's finish chunk"
        if choice["finish_reason"]:
            finished.add(choice["index"])
        delta = choice["delta"]
        text += delta.get("content") or ""
        arguments += "".join(call["function"]["arguments"] for call in delta.get("tool_calls", ()))
    assert out[-1].data == "[DONE]"
    assert text == REDACTED
    assert orjson.loads(arguments) == {"to": "[EMAIL]", "city": "[CITY]"}


def test_anthropic_stream_text_and_tool_input():
    def event(name: str, payload: dict) -> SSEEvent:
        return SSEEvent(SSEEvent.from_json({"type": name, **payload}, event=name).raw)

    args = '{"card": "4111111111111111", "n": 3}'
    events = [
        event("message_start", {"message": {"id": "m", "content": [], "usage": {"input_tokens": 1}}}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        *(event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": c}}) for c in TEXT),
        event("content_block_stop", {"index": 0}),
        event("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "t", "input": {}}}),
        *(
            event("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": c}})
            for c in args
        ),
        event("content_block_stop", {"index": 1}),
        event("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        event("message_stop", {}),
    ]
    out = _run("anthropic", events)
    text = json_text = ""
    stopped: set[int] = set()
    for item in out:
        payload = orjson.loads(item.data)
        assert payload["type"] == item.event
        if item.event == "content_block_stop":
            stopped.add(payload["index"])
        if item.event == "content_block_delta":
            assert payload["index"] not in stopped
            delta = payload["delta"]
            text += delta.get("text", "")
            json_text += delta.get("partial_json", "")
    assert text == REDACTED
    assert orjson.loads(json_text) == {"card": "[CARD]", "n": 3}
    assert [e.event for e in out][-2:] == ["message_delta", "message_stop"]


def test_responses_stream_deltas_and_done_events_agree():
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}

    def event(kind: str, payload: dict) -> SSEEvent:
        return SSEEvent(SSEEvent.from_json({"type": kind, **payload}, event=kind).raw)

    part = {"type": "output_text", "text": TEXT, "annotations": []}
    item = {"id": "msg_1", "type": "message", "role": "assistant", "content": [part]}
    events = [
        *(event("response.output_text.delta", {**where, "delta": TEXT[i : i + 3]}) for i in range(0, len(TEXT), 3)),
        event("response.output_text.done", {**where, "text": TEXT}),
        event("response.content_part.done", {**where, "part": part}),
        event("response.output_item.done", {"output_index": 0, "item": item}),
        event("response.completed", {"response": {"id": "r", "output": [item]}}),
    ]
    out = [orjson.loads(e.data) for e in _run("openai", events)]
    deltas = "".join(p["delta"] for p in out if p["type"] == "response.output_text.delta")
    done = next(p for p in out if p["type"] == "response.output_text.done")
    assert deltas == done["text"] == REDACTED
    assert out[-1]["response"]["output"][0]["content"][0]["text"] == REDACTED
    assert [p["type"] for p in out].index("response.output_text.done") > max(
        i for i, p in enumerate(out) if p["type"] == "response.output_text.delta"
    )


def test_block_ends_the_stream_with_the_protocol_error_event():
    redaction = _redaction(RedactionConfig(output=["email", "api_key"], actions={"api_key": "block"}))
    key = "sk-" + "proj-abc123DEF456ghi789JKL012"
    out = _run("openai", _chat_events(list(f"hello {key} and more text after")), redaction)
    payloads = [orjson.loads(e.data) for e in out]
    assert "error" in payloads[-1] and payloads[-1]["error"]["code"] == "content_blocked"
    assert key[:8] not in "".join(e.raw.decode() for e in out)
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1]) == "hello "


def test_events_without_text_pass_through_untouched():
    event = SSEEvent(b'data: {"id":"x","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}\n\n')
    rewriter = StreamRewriter(PROTOCOLS["openai"], _redaction())
    assert rewriter.event(event) == [event]


CLEAN = "The meeting moved to Thursday at 3pm; room 4 has the notes, and Anna will bring coffee. Thanks!"


def _texts(out: list[SSEEvent]) -> str:
    deltas = [orjson.loads(e.data)["choices"][0]["delta"] for e in out if e.data != "[DONE]"]
    return "".join(delta.get("content") or "" for delta in deltas)


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(0, len(CLEAN)), max_size=40))
def test_events_with_nothing_to_mask_go_out_as_their_own_bytes(cuts):
    events = _chat_events(_split(CLEAN, cuts))
    assert [e.raw for e in _run("openai", events)] == [e.raw for e in events]


def test_an_event_is_held_until_later_text_settles_it_and_order_is_kept():
    role, hello, there, stop, other_stop, done = _chat_events(["Hello", " there"])
    rewriter = StreamRewriter(PROTOCOLS["openai"], _redaction())
    assert rewriter.event(role) == [role]  # nothing held: an event without text goes at once
    assert rewriter.event(hello) == []  # "Hello" could still begin an address
    assert rewriter.event(there) == [hello]  # the space settles it: its own bytes
    assert rewriter.event(other_stop) == []  # no text, but behind " there"
    assert rewriter.event(stop) == [there, other_stop, stop]  # the choice ends: its held event goes, in order
    assert rewriter.event(done) == [done]
    assert rewriter.end() == [] and rewriter.queued == 0


def test_the_first_event_of_a_stream_is_never_held():
    first, rest = _chat_events(["Hello", " there"])[1:3]
    rewriter = StreamRewriter(PROTOCOLS["openai"], _redaction())
    out = rewriter.event(first)
    assert len(out) == 1 and _texts(out) == ""  # sent at once, its undecided word moved on
    assert _texts(rewriter.event(rest)) == ""  # " there" still undecided, "Hello " ready...
    assert _texts(rewriter.end()) == "Hello there"


@pytest.mark.parametrize("bounds", [{"stream_hold_events": 2}, {"stream_hold_bytes": 600}, {"stream_hold_events": 0}])
def test_held_events_stay_within_their_bounds_and_the_text_stays_exact(bounds):
    config = RedactionConfig(output=["pii", "api_key", "city"], custom=[{"name": "city", "pattern": "Paris"}], **bounds)
    events = _chat_events([*list("Mail " + "j" * 60 + ".doe@acmecorp.com now"), " then", " Paris."])
    rewriter = StreamRewriter(PROTOCOLS["openai"], _redaction(config))
    out: list[SSEEvent] = []
    for event in events:
        out += rewriter.event(event)
        assert rewriter.queued <= bounds.get("stream_hold_events", 16)
        assert rewriter.queued_bytes <= bounds.get("stream_hold_bytes", 64 * 1024)
        if bounds.get("stream_hold_events") == 0:
            assert out and out[-1].raw.endswith(b"\n\n")
    out += rewriter.end()
    assert _texts(out) == "Mail [EMAIL] now then [CITY]."


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_split_under_any_hold_bound_reads_the_whole_answer(data):
    hold = data.draw(st.integers(0, 4))
    config = RedactionConfig(output=["pii", "api_key", "city"], custom=[{"name": "city", "pattern": "Paris"}])
    redaction = _redaction(config.model_copy(update={"stream_hold_events": hold}))
    args = '{"to": "jane@corp.io", "note": "caf\\u00e9 in Paris"}'
    cuts = data.draw(st.lists(st.integers(0, len(TEXT)), max_size=30))
    tool_cuts = data.draw(st.lists(st.integers(0, len(args)), max_size=10))
    events = _chat_events(_split(TEXT, cuts), _split(args, tool_cuts))
    rewriter = StreamRewriter(PROTOCOLS["openai"], redaction)
    out: list[SSEEvent] = []
    for event in events:
        out += rewriter.event(event)
        assert rewriter.queued <= hold
    out += rewriter.end()
    assert _texts(out) == REDACTED
    deltas = [orjson.loads(e.data)["choices"][0]["delta"] for e in out if e.data != "[DONE]"]
    arguments = "".join(call["function"]["arguments"] for d in deltas for call in d.get("tool_calls", ()))
    assert orjson.loads(arguments) == {"to": "[EMAIL]", "note": "café in [CITY]"}


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(0, 60), max_size=20))
def test_placeholders_put_back_across_held_events(cuts):
    config = RedactionConfig(output=["pii"], input=["email"], input_action="pseudonymise")
    redaction = _redaction(config)
    body = {"model": "m", "messages": [{"role": "user", "content": "mail jane@acmecorp.com and bob@acmecorp.com"}]}
    assert redaction.redact_request(PROTOCOLS["openai"], body)
    text = "Sure: [EMAIL_2] first, then [EMAIL_1], card 4111 1111 1111 1111. [EMAIL_3] done"
    out = _run("openai", _chat_events(_split(text, cuts)), redaction)
    assert _texts(out) == "Sure: bob@acmecorp.com first, then jane@acmecorp.com, card [CARD]. [EMAIL_3] done"


# ---- whole bodies


def test_openai_body_message_and_tool_arguments():
    body = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": TEXT}},
            {
                "index": 1,
                "message": {"content": None, "tool_calls": [{"function": {"name": "f", "arguments": '{"c":"Paris"}'}}]},
            },
        ],
        "usage": {"prompt_tokens": 1},
    }
    out = orjson.loads(_redaction().redact_body(PROTOCOLS["openai"], orjson.dumps(body), "application/json"))
    assert out["choices"][0]["message"]["content"] == REDACTED
    assert out["choices"][1]["message"]["tool_calls"][0]["function"]["arguments"] == '{"c":"[CITY]"}'
    assert out["usage"] == body["usage"]


def test_unchanged_body_keeps_its_bytes():
    body = b'{"choices": [{"message": {"content": "nothing to see"}}],   "id": "x"}'
    assert _redaction().redact_body(PROTOCOLS["openai"], body, "application/json") is body


def test_anthropic_body_text_and_tool_use_input():
    body = {"content": [{"type": "text", "text": TEXT}, {"type": "tool_use", "input": {"where": ["Paris", 1]}}]}
    out = orjson.loads(_redaction().redact_body(PROTOCOLS["anthropic"], orjson.dumps(body), "application/json"))
    assert out["content"][0]["text"] == REDACTED
    assert out["content"][1]["input"] == {"where": ["[CITY]", 1]}


def test_tool_response_json_string_values_and_secret_keys():
    config = RedactionConfig(output=["email", "password"])
    body = {"user": {"email": "a@b.co", "password": "hunter22", "age": 42}, "notes": ["write to c@d.io"]}
    out = orjson.loads(_redaction(config).redact_body(PROTOCOLS["http"], orjson.dumps(body), "application/json"))
    assert out == {"user": {"email": "[EMAIL]", "password": "[SECRET]", "age": 42}, "notes": ["write to [EMAIL]"]}


def test_block_on_a_body_raises_the_protocol_error():
    redaction = _redaction(RedactionConfig(output=["credit_card"], action="block"))
    body = orjson.dumps({"content": [{"type": "text", "text": TEXT}]})
    with pytest.raises(Forbidden) as err:
        redaction.redact_body(PROTOCOLS["anthropic"], body, "application/json")
    assert err.value.status == 403 and "credit_card" in err.value.message and "4111" not in err.value.message


def test_json_that_orjson_refuses_is_redacted_all_the_same():
    redaction = _redaction(RedactionConfig(output=["email"]))
    big = b'{"id": 123456789012345678901234567890, "to": "a@b.co"}'
    assert json.loads(redaction.redact_body(PROTOCOLS["http"], big, "application/json")) == {
        "id": 123456789012345678901234567890,
        "to": "[EMAIL]",
    }
    broken = b'{"to": "a@b.co", "cut'
    assert redaction.redact_body(PROTOCOLS["http"], broken, "application/json") == b'{"to": "[EMAIL]", "cut'
    rewriter = StreamRewriter(PROTOCOLS["http"], redaction)
    (text_event,) = rewriter.event(SSEEvent.build("plain text for c@d.io", "note"))
    (big_event,) = rewriter.event(SSEEvent.build(big.decode()))
    (rest,) = rewriter.end()  # the address could have gone on in the next `note` event
    assert text_event.data + rest.data == "plain text for [EMAIL]" and text_event.event == rest.event == "note"
    assert json.loads(big_event.data)["to"] == "[EMAIL]"


def test_refusal_text_is_a_channel_of_its_own():
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [
        SSEEvent(SSEEvent.from_json({**base, "choices": [{"index": 0, "delta": {"refusal": piece}}]}).raw)
        for piece in ["I won't mail jo", "hn@glo", "bex.com."]
    ]
    events.append(
        SSEEvent(SSEEvent.from_json({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).raw)
    )
    out = [orjson.loads(e.data)["choices"][0]["delta"] for e in _run("openai", events)]
    assert "".join(d.get("refusal") or "" for d in out) == "I won't mail [EMAIL]."


# ---- http and MCP streams: text that continues across events


def _plain(pieces: list[str], name: str | None = None) -> list[SSEEvent]:
    return [SSEEvent(SSEEvent.build(piece, name).raw.replace(b"\n\n", b"\nid: 7\n\n")) for piece in pieces]


@pytest.mark.parametrize("cut", range(1, len(TEXT)))
def test_http_plain_text_split_at_every_offset_is_exact(cut):
    out = _run("http", _plain([TEXT[:cut], TEXT[cut:]], "chunk"))
    assert "".join(e.data or "" for e in out) == REDACTED
    assert all(e.event == "chunk" for e in out)
    assert b"id: 7" in out[0].raw  # the event's other fields stay


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(0, len(TEXT)), max_size=30))
def test_http_plain_text_any_split_is_exact_and_channels_are_per_event_name(cuts):
    pieces = _split(TEXT, cuts)
    events = [e for piece in pieces for e in (*_plain([piece], "text"), *_plain(["Paris c@d.io. "], "other"))]
    out = _run("http", events)
    assert "".join(e.data or "" for e in out if e.event == "text") == REDACTED
    assert "".join(e.data or "" for e in out if e.event == "other") == "[CITY] [EMAIL]. " * len(pieces)


def _mcp(method: str, params: dict) -> SSEEvent:
    return SSEEvent(SSEEvent.from_json({"jsonrpc": "2.0", "method": method, "params": params}, event="message").raw)


RESULT = {"content": [{"type": "text", "text": TEXT}]}


def test_mcp_log_and_progress_messages_are_redacted_whole_each_on_its_own():
    events = [
        _mcp("notifications/progress", {"progressToken": 1, "progress": 1, "message": "step 1 of 3"}),
        _mcp("notifications/message", {"level": "info", "logger": "db", "data": TEXT}),
        _mcp("notifications/progress", {"progressToken": 1, "progress": 2, "message": "step 2 of 3"}),
        SSEEvent(SSEEvent.from_json({"jsonrpc": "2.0", "id": 3, "result": RESULT}, event="message").raw),
    ]
    out = [orjson.loads(e.data) for e in _run("mcp", events)]
    assert [m.get("method") for m in out] == ["notifications/progress", "notifications/message",
                                               "notifications/progress", None]  # fmt: skip
    assert out[0]["params"]["message"] == "step 1 of 3" and out[2]["params"]["message"] == "step 2 of 3"
    assert out[1]["params"]["data"] == REDACTED
    assert out[-1] == {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": REDACTED}]}}


def test_mcp_messages_keep_whole_value_redaction_beside_their_text_channel():
    event = _mcp("notifications/message", {"level": "info", "logger": "a@b.co", "data": "hello"})
    (out,) = _run("mcp", [event])[:1]
    assert orjson.loads(out.data)["params"]["logger"] == "[EMAIL]"


@pytest.mark.parametrize(
    "raw",
    [b'data: {"method":"notifications/message","params":{"data":"a@b.co","logger":{"x":1}}}\n\n',
     b'data: {"method":"notifications/message","params":"x"}\n\n', b'data: [{"method":"notifications/message"}]\n\n',
     b'data: {"method":"notifications/progress","params":{"message":"m","progress":"1","total":1}}\n\n',
     b'data: {"method":"notifications/progress","params":{"message":"c@d.io","progress":2,"total":2}}\n\n',
     b'data: {"id":1,"error":{"code":-1,"message":"e@f.io"}}\n\n', b"data: 12345678901234567890123\n\n",
     b"data: true\n\n", b'data: "a@b.co"\n\n', b"data: {not json\n\n"],
)  # fmt: skip
def test_odd_mcp_and_http_events_never_raise_and_are_redacted(raw):
    for protocol in ("mcp", "http"):
        out = _run(protocol, [SSEEvent(raw)])
        assert b"@" not in b"".join(e.raw for e in out)


# ---- http tools' JSON streams: the fields the policy names


REDACTED_UPPER = "MAIL [EMAIL] OR CALL [PHONE]; CARD [CARD]. THANKS!"
FIELDS = RedactionConfig(output=["pii", "api_key", "password"], stream_text=["delta", "out.text"])


def _json_events(pieces: list[str]) -> list[SSEEvent]:
    return [
        SSEEvent(SSEEvent.from_json({"id": f"e{i}", "delta": p, "out": {"text": p.upper(), "n": i}}, event="d").raw)
        for i, p in enumerate(pieces)
    ]


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(0, len(TEXT)), max_size=30))
def test_http_json_fields_named_by_the_policy_are_exact_across_events(cuts):
    pieces = _split(TEXT, cuts)
    out = [orjson.loads(e.data) for e in _run("http", _json_events(pieces), _redaction(FIELDS))]
    assert "".join(m["delta"] for m in out) == REDACTED
    assert "".join(m["out"]["text"] for m in out) == REDACTED_UPPER  # a channel of its own
    assert [m["id"] for m in out[: len(pieces)]] == [f"e{i}" for i in range(len(pieces))]  # ids never move


def test_http_json_fields_keep_whole_redaction_and_secret_keys_around_them():
    event = SSEEvent.from_json({"delta": "hi ", "password": "hunter22", "meta": {"to": "a@b.co"}}, event="d")
    (out,) = _run("http", [event], _redaction(FIELDS))
    assert orjson.loads(out.data) == {"delta": "hi ", "password": "[SECRET]", "meta": {"to": "[EMAIL]"}}
    unnamed = SSEEvent.from_json({"text": "mail a@b.co"})
    assert orjson.loads(_run("http", [unnamed], _redaction(FIELDS))[0].data) == {"text": "mail [EMAIL]"}


def test_stream_text_paths_are_validated():
    with pytest.raises(ValueError):
        RedactionConfig(output=["email"], stream_text=["a..b"])


@settings(max_examples=200, deadline=None)
@given(
    choice=st.fixed_dictionaries(
        {"delta": st.dictionaries(st.sampled_from(["content", "role", "refusal"]), st.one_of(st.text(), st.none()))},
        optional={
            "index": st.one_of(st.integers(-1, 9), st.text(max_size=2)),
            "finish_reason": st.one_of(st.none(), st.sampled_from(["", "stop", "length"])),
        },
    )
)
def test_the_usual_chunk_has_the_slots_and_closes_of_any_chunk(choice):
    payload = {"id": "x", "choices": [choice]}
    general = {**payload, "choices": [choice, {"delta": {}}]}  # two choices: the general walk
    assert openai_event(payload) == openai_event(general)
    assert openai_closes(payload, None) == openai_closes(general, None)


def _long_drips() -> dict[str, tuple[list[SSEEvent], int]]:
    """Streams whose text keeps the lane out of step for a long time; the characters of it each event carries."""
    args = ['{"note": "caf\\u00e9 ', *["\\u00e9x" * 8] * 1500, '"}']  # re-encoded: released text is not its own
    secret = ["Your password=", *("abcdefghij"[i % 10] for i in range(6000)), " thanks"]  # masked, then released
    return {"arguments": (_chat_events([], args), 56), "password": (_chat_events(secret), 1)}


@pytest.mark.parametrize("kind", ["arguments", "password"])
def test_a_lane_keeps_a_bounded_text_however_long_the_stream(kind):
    events, per_event = _long_drips()[kind]
    rewriter = StreamRewriter(PROTOCOLS["openai"], _redaction(RedactionConfig(output=["pii", "secrets"])))
    out, kept = [], 0
    for event in events:
        out += rewriter.event(event)
        kept = max(kept, rewriter.kept_chars)
    out += rewriter.end()
    assert kept <= 2 * MAX_SECRET + 64 * per_event  # the stream carries far more: 84,000 and 6,000 characters
    deltas = [orjson.loads(event.data)["choices"][0]["delta"] for event in out[:-1]]
    if kind == "arguments":
        arguments = "".join(call["function"]["arguments"] for delta in deltas for call in delta.get("tool_calls", ()))
        assert orjson.loads(arguments) == {"note": "café " + "éx" * 8 * 1500}
    else:
        value = ("abcdefghij" * 600)[MAX_SECRET:]
        assert "".join(delta.get("content") or "" for delta in deltas) == f"Your password=[SECRET]{value} thanks"

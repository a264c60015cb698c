"""The mock upstream is only useful if real SDKs accept it, so drive it with them directly."""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.request
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from proxy.mock_upstream import MockBehaviour, answer_words, count_tokens
from proxy.mock_upstream.openai_extra import EMBEDDING_DIM
from tests.fixtures.fake_upstream import FakeUpstream

USER = "What is the capital of France and why"
MESSAGES: list[Any] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": USER},
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def oai(fake_upstream: FakeUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake_upstream.openai_url, api_key="sk-caller", max_retries=0, timeout=5)


@pytest.fixture
def ant(fake_upstream: FakeUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake_upstream.url, api_key="sk-ant-caller", max_retries=0, timeout=5)


def expected_text(prompt: str = USER, words: int = 12) -> str:
    return " ".join(answer_words(prompt, words))


def raw_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# ---------------------------------------------------------------- OpenAI chat


def test_chat_non_stream_shape_and_usage(oai: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == expected_text()
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_tokens(["Be brief.", USER])
    assert completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 0
    assert fake_upstream.count("/v1/chat/completions") == 1


def test_chat_is_deterministic_but_ids_are_unique(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    second = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.id != second.id


def test_chat_stream_reassembles_to_non_stream_content(oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))

    assert chunks[0].choices[0].delta.role == "assistant"
    content_deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content_deltas) == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "usage chunk needs stream_options.include_usage"
    assert plain.usage is not None
    assert len(content_deltas) == plain.usage.completion_tokens


def test_chat_stream_usage_chunk_only_with_include_usage(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert all(c.usage is None for c in chunks[:-1])


async def test_async_client_chat_stream(fake_upstream: FakeUpstream) -> None:
    client = openai.AsyncOpenAI(base_url=fake_upstream.openai_url, api_key="x", max_retries=0, timeout=5)
    async with client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        plain = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert text == plain.choices[0].message.content == expected_text()
    assert fake_upstream.last().headers["x-stainless-async"].startswith("async")


def test_chat_tool_call_non_stream(oai: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    completion = oai.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_chat_tool_call_stream_in_pieces(oai: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris please"}]
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], stream=True))

    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert len([d for d in deltas if d.function and d.function.arguments]) > 1
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_chat_stream_helper_accumulates_tool_call(oai: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather?"}]
    with oai.chat.completions.stream(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()

    calls = final.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.arguments == '{"city":"Paris"}'


def test_tools_without_weather_answer_with_text(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL])

    assert completion.choices[0].message.content == expected_text()
    assert completion.choices[0].message.tool_calls is None


# ---------------------------------------------------------------- other OpenAI endpoints


def test_legacy_completions_stream_and_not(oai: openai.OpenAI) -> None:
    plain = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello")
    chunks = list(
        oai.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say hello", stream=True, stream_options={"include_usage": True}
        )
    )

    assert plain.object == "text_completion"
    assert plain.choices[0].text == expected_text("Say hello")
    assert plain.usage is not None and plain.usage.completion_tokens == 12
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert chunks[-1].usage == plain.usage


def test_responses_non_stream(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-4o", input=USER, instructions="Be brief.")

    assert response.status == "completed"
    assert response.output_text == expected_text()
    assert response.output[0].type == "message"
    assert response.usage is not None
    assert response.usage.input_tokens == count_tokens(["Be brief.", USER])
    assert response.usage.output_tokens == 12
    assert response.usage.total_tokens == response.usage.input_tokens + 12
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0


def test_responses_stream_events_and_final_response(oai: openai.OpenAI) -> None:
    plain = oai.responses.create(model="gpt-4o", input=MESSAGES)
    events = list(oai.responses.create(model="gpt-4o", input=MESSAGES, stream=True))
    with oai.responses.stream(model="gpt-4o", input=MESSAGES) as stream:
        final = stream.get_final_response()

    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == plain.output_text == final.output_text == expected_text()
    assert final.usage == plain.usage
    assert final.usage is not None and final.usage.output_tokens == len(deltas)


def test_embeddings_default_base64_matches_float(oai: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    default = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    sent_default = fake_upstream.last("/v1/embeddings").json()
    floats = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float")

    assert sent_default["encoding_format"] == "base64", "the SDK asks for base64 unless told otherwise"
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert all(len(d.embedding) == EMBEDDING_DIM for d in default.data)
    assert default.data[0].embedding != default.data[1].embedding
    assert default.usage.prompt_tokens == default.usage.total_tokens == count_tokens(["alpha", "beta"], per_message=0)


def test_embeddings_explicit_base64_is_little_endian_float32(oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="base64")
    floats = oai.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")

    encoded = result.data[0].embedding
    assert isinstance(encoded, str)
    assert list(struct.unpack(f"<{EMBEDDING_DIM}f", base64.b64decode(encoded))) == floats.data[0].embedding


def test_models_list(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]

    assert {"gpt-4o", "gpt-4o-mini", "mock-model"} <= set(ids)


# ---------------------------------------------------------------- Anthropic


def test_anthropic_message_and_stream_agree(ant: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {
        "model": "claude-mock",
        "max_tokens": 256,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": USER}]}],
    }
    message = ant.messages.create(**kwargs)
    with ant.messages.stream(**kwargs) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()

    assert message.type == "message" and message.role == "assistant"
    assert message.model == "claude-mock"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.content[0].type == "text" and message.content[0].text == expected_text()
    assert message.usage.input_tokens == count_tokens(["Be brief.", USER])
    assert message.usage.output_tokens == 12 == len(texts)
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0
    assert final.content[0].type == "text" and final.content[0].text == message.content[0].text
    assert final.usage.input_tokens == message.usage.input_tokens
    assert final.usage.output_tokens == message.usage.output_tokens
    assert final.stop_reason == "end_turn"


def test_anthropic_raw_stream_event_order(ant: anthropic.Anthropic) -> None:
    events = list(ant.messages.create(model="claude", max_tokens=50, messages=MESSAGES[1:], stream=True))

    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and start.message.usage.output_tokens == 1
    assert delta.type == "message_delta" and delta.usage.output_tokens == kinds.count("content_block_delta")


def test_anthropic_tool_use(ant: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {
        "model": "claude",
        "max_tokens": 100,
        "tools": [ANTHROPIC_TOOL],
        "messages": [{"role": "user", "content": "How is the weather in Paris?"}],
    }
    message = ant.messages.create(**kwargs)
    with ant.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()

    for result in (message, final):
        block = result.content[0]
        assert result.stop_reason == "tool_use"
        assert block.type == "tool_use" and block.name == "get_weather"
        assert block.input == {"city": "Paris"}


def test_anthropic_count_tokens_matches_usage(ant: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": USER}]
    counted = ant.messages.count_tokens(model="claude", system="Be brief.", messages=messages)
    message = ant.messages.create(model="claude", max_tokens=10, system="Be brief.", messages=messages)

    assert counted.input_tokens == message.usage.input_tokens == count_tokens(["Be brief.", USER])


# ---------------------------------------------------------------- faults


def test_status_500_openai_shape(oai: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    fake_upstream.behaviour.fault = "status_500"

    with pytest.raises(openai.InternalServerError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert caught.value.status_code == 500
    assert isinstance(caught.value.body, dict)
    assert {"message", "type", "code"} <= caught.value.body.keys()


def test_status_429_carries_retry_after(oai: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    fake_upstream.behaviour.fault = "status_429"
    fake_upstream.behaviour.retry_after = "3"

    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert caught.value.response.headers["retry-after"] == "3"


def test_status_faults_anthropic_shape(ant: anthropic.Anthropic, fake_upstream: FakeUpstream) -> None:
    fake_upstream.behaviour.fault = "status_503"

    with pytest.raises(anthropic.APIStatusError) as caught:
        ant.messages.create(model="claude", max_tokens=10, messages=MESSAGES[1:])

    assert caught.value.status_code == 503
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Mock fault injected: status_503"},
    }


def test_reset_is_a_connection_error(oai: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    fake_upstream.behaviour.fault = "reset"

    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert fake_upstream.count("/v1/chat/completions") == 1


def test_cut_stream_ends_without_done(oai: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    fake_upstream.behaviour.fault = "cut_stream"
    received: list[Any] = []

    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
            received.append(chunk)

    assert 1 <= len(received) <= 2


def test_cut_stream_anthropic_stream_breaks(ant: anthropic.Anthropic, fake_upstream: FakeUpstream) -> None:
    fake_upstream.behaviour.fault = "cut_stream"
    received: list[Any] = []

    # Unlike the openai SDK, this anthropic SDK lets the raw transport error escape mid-stream.
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        for event in ant.messages.create(model="claude", max_tokens=10, messages=MESSAGES[1:], stream=True):
            received.append(event)

    assert [e.type for e in received] == ["message_start", "content_block_start"]


def test_cut_non_stream_truncates_body(oai: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    fake_upstream.behaviour.fault = "cut_stream"

    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)


def test_slow_first_byte_still_succeeds(oai: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    fake_upstream.behaviour.fault = "slow_first_byte"
    fake_upstream.behaviour.delay_s = 0.05

    completion = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert completion.choices[0].message.content == expected_text()


def test_hang_times_out_client(fake_upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=fake_upstream.openai_url, api_key="x", max_retries=0, timeout=0.3)
    fake_upstream.behaviour.fault = "hang"

    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)


def test_fault_times_applies_then_clears(oai: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    fake_upstream.behaviour.fault = "status_500"
    fake_upstream.behaviour.fault_times = 2

    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    completion = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert completion.choices[0].message.content == expected_text()
    assert fake_upstream.behaviour.fault is None
    assert fake_upstream.count("/v1/chat/completions") == 3


def test_header_overrides_per_request(oai: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    short = oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"x-mock-reply-words": "5", "x-mock-delay-s": "0.01"}
    )
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"x-mock-fault": "status_429"})

    assert short.choices[0].message.content == expected_text(words=5)
    assert short.usage is not None and short.usage.completion_tokens == 5
    assert fake_upstream.behaviour.fault is None


def test_paced_stream_carries_the_same_events(oai: openai.OpenAI) -> None:
    """`x-mock-event-interval-ms` only spaces the events out in time (as a generating model would)."""
    burst = list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    paced = list(
        oai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"x-mock-event-interval-ms": "0.5"}
        )
    )
    assert [c.choices[0].delta.content for c in paced] == [c.choices[0].delta.content for c in burst]
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"x-mock-event-interval-ms": "-1"}
        )


def test_omit_usage(oai: openai.OpenAI, ant: anthropic.Anthropic, fake_upstream: FakeUpstream) -> None:
    fake_upstream.behaviour.omit_usage = True

    completion = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    response = oai.responses.create(model="gpt-4o", input=USER)
    raw = ant.messages.with_raw_response.create(model="claude", max_tokens=10, messages=MESSAGES[1:])

    assert completion.usage is None
    assert all(c.usage is None for c in chunks) and chunks[-1].choices
    assert response.usage is None
    assert "usage" not in json.loads(raw.http_response.content)


# ---------------------------------------------------------------- recording and errors


def test_records_what_the_client_sent(
    oai: openai.OpenAI, ant: anthropic.Anthropic, fake_upstream: FakeUpstream
) -> None:
    oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"X-Trace-Id": "t-1"})
    ant.messages.create(model="claude", max_tokens=10, messages=MESSAGES[1:])

    openai_request, anthropic_request = fake_upstream.requests
    assert openai_request.method == "POST" and openai_request.path == "/v1/chat/completions"
    assert openai_request.headers["authorization"] == "Bearer sk-caller"
    assert openai_request.headers["x-trace-id"] == "t-1"
    assert openai_request.json()["messages"] == MESSAGES
    assert anthropic_request.path == "/v1/messages"
    assert "anthropic-version" in anthropic_request.headers
    # anthropic 2.x sends api_key as "Authorization: Bearer", older releases as "x-api-key".
    credential = anthropic_request.headers.get("x-api-key") or anthropic_request.headers.get("authorization", "")
    assert credential.endswith("sk-ant-caller")


def test_bad_requests_use_protocol_shape(fake_upstream: FakeUpstream) -> None:
    status, body = raw_post(fake_upstream.url + "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"

    status, body = raw_post(fake_upstream.url + "/v1/chat/completions", b'{"model": "gpt-4o"}')
    assert status == 400 and "messages" in body["error"]["message"]

    status, body = raw_post(fake_upstream.url + "/v1/messages", b'{"messages": []}')
    assert status == 400 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"

    status, body = raw_post(fake_upstream.url + "/v1/responses", b'{"model": "gpt-4o"}')
    assert status == 400 and "input" in body["error"]["message"]

    status, body = raw_post(fake_upstream.url + "/v1/nope", b"{}")
    assert status == 404 and body["error"]["code"] == "unknown_url"


def test_sdk_bad_request_errors(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"x-mock-fault": "bogus"})
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.create(model="claude", max_tokens=10, messages=MESSAGES[1:], extra_body={"messages": None})


def test_tool_echo_endpoint(fake_upstream: FakeUpstream) -> None:
    status, body = raw_post(fake_upstream.url + "/tools/echo/search/web?q=cats", b'{"k": 1}', {"x-tool": "yes"})

    assert status == 200
    assert body["method"] == "POST"
    assert body["path"] == "/tools/echo/search/web"
    assert body["query"] == {"q": "cats"}
    assert body["body"] == {"k": 1}
    assert body["headers"]["x-tool"] == "yes"
    with urllib.request.urlopen(fake_upstream.url + "/tools/echo/x", timeout=5) as response:
        assert json.loads(response.read())["method"] == "GET"


def test_behaviour_reset_and_validation(fake_upstream: FakeUpstream, oai: openai.OpenAI) -> None:
    oai.models.list()
    fake_upstream.behaviour.fault = "status_500"
    fake_upstream.behaviour.omit_usage = True
    requests = fake_upstream.requests

    fake_upstream.reset()

    assert requests == [] and fake_upstream.requests is requests
    assert fake_upstream.behaviour.fault is None and not fake_upstream.behaviour.omit_usage
    with pytest.raises(ValueError):
        MockBehaviour(fault="explode")

"""OpenTelemetry traces through the real SDKs: a span per request with the GenAI conventions, one per attempt."""

from __future__ import annotations

import anthropic
import openai
import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "my secret is hunter2, say something short"}]
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
TRACING = "server: {tracing: {enabled: true}}"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def finished(exporter: InMemorySpanExporter, count: int) -> list:
    wait_for(lambda: len(exporter.get_finished_spans()) >= count)
    return list(exporter.get_finished_spans())


def by_kind(found: list, kind: SpanKind) -> list:
    return [span for span in found if span.kind == kind]


def test_a_chat_request_is_one_server_span_continuing_the_callers_trace(proxy_factory, fake_upstream, spans):
    provider, exporter = spans
    proxy = proxy_factory(basic_policy(fake_upstream.url, TRACING), tracer_provider=provider)
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"traceparent": TRACEPARENT}
    )
    found = finished(exporter, 2)
    (server,), (attempt,) = by_kind(found, SpanKind.SERVER), by_kind(found, SpanKind.CLIENT)
    assert server.name == "chat gpt-4o-mini"
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None and server.parent.span_id == 0x00F067AA0BA902B7
    attributes = dict(server.attributes)
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert attributes["http.response.status_code"] == 200
    assert attributes["agent_proxy.caller"] == "demo"
    assert attempt.parent.span_id == server.context.span_id
    assert dict(attempt.attributes)["server.address"] == "127.0.0.1"
    sent = fake_upstream.last().headers["traceparent"]
    assert sent == f"00-{CALLER_TRACE}-{format(attempt.context.span_id, '016x')}-01", "the attempt's context goes on"
    everything = orjson.dumps([dict(span.attributes) for span in found]).decode() + "".join(s.name for s in found)
    for secret in ("hunter2", DEMO_KEY, "upstream-secret", "Bearer"):
        assert secret not in everything


def test_a_stream_ends_its_span_with_the_streams_usage(proxy_factory, fake_upstream, spans):
    provider, exporter = spans
    proxy = proxy_factory(basic_policy(fake_upstream.url, TRACING), tracer_provider=provider)
    client = anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    (server,) = by_kind(finished(exporter, 2), SpanKind.SERVER)
    attributes = dict(server.attributes)
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.usage.output_tokens"] == final.usage.output_tokens
    assert server.status.status_code != StatusCode.ERROR


def test_a_failed_attempt_and_its_request_are_marked_as_errors(proxy_factory, fake_upstream, spans):
    provider, exporter = spans
    proxy = proxy_factory(basic_policy(fake_upstream.url, TRACING), tracer_provider=provider)
    fake_upstream.behaviour.fault = "status_503"
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    found = finished(exporter, 2)
    (server,), (attempt,) = by_kind(found, SpanKind.SERVER), by_kind(found, SpanKind.CLIENT)
    assert attempt.status.status_code == StatusCode.ERROR and dict(attempt.attributes)["error.type"] == "503"
    assert dict(server.attributes)["http.response.status_code"] == 503


def test_no_span_when_the_policy_leaves_tracing_off(proxy_factory, fake_upstream, spans):
    provider, exporter = spans
    proxy = proxy_factory(basic_policy(fake_upstream.url), tracer_provider=provider)
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"traceparent": TRACEPARENT})
    assert fake_upstream.last().headers["traceparent"] == TRACEPARENT, "the caller's context passes on unchanged"
    assert exporter.get_finished_spans() == ()

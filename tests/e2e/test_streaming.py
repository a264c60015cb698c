"""Streams go through event by event; broken ones end the protocol's way; a caller leaving frees the upstream."""

from __future__ import annotations

import socket

import anthropic
import openai
import pytest

from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "Write a long story"}]


@pytest.fixture
def proxy(proxy_factory, fake_upstream):
    return proxy_factory(basic_policy(fake_upstream.url))


def test_openai_stream_cut_midway_ends_with_an_error_event(proxy, fake_upstream):
    fake_upstream.behaviour.fault = "cut_stream"
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
            received.append(chunk)
    assert received, "the events before the cut reach the caller"
    assert "broke" in str(err.value)
    assert fake_upstream.count("/v1/chat/completions") == 1
    wait_for(lambda: proxy.metric("agent_proxy_errors_total", {"kind": "upstream", "source": "upstream"}) == 1)


def test_anthropic_stream_cut_midway_raises_in_the_sdk(proxy, fake_upstream):
    fake_upstream.behaviour.fault = "cut_stream"
    client = anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0)
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(model="claude-mock-1", max_tokens=100, messages=MESSAGES) as stream,
    ):
        for _ in stream:
            pass


def test_caller_disconnect_cancels_the_upstream_request(proxy, fake_upstream):
    """A caller that leaves mid-stream: the proxy stops reading upstream and frees the request."""
    fake_upstream.behaviour.reply_words = 5000
    fake_upstream.behaviour.delay_s = 0.0
    body = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"go"}]}'
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {DEMO_KEY}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_for(lambda: proxy.metric("agent_proxy_requests_in_flight") == 0)
    wait_for(
        lambda: (
            proxy.metric(
                "agent_proxy_requests_total", {"route": "openai", "upstream": "up-openai", "status_class": "2xx"}
            )
            == 1
        )
    )

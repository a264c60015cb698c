"""Streams go through event by event; broken ones end the protocol's way; a caller leaving frees the upstream."""

from __future__ import annotations

import asyncio
import socket
import threading

import anthropic
import openai
import pytest
from aiohttp import web

from tests.fixtures.http import send_post
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.servers import ServerThread
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
        send_post(sock, "/v1/chat/completions", body, {"authorization": f"Bearer {DEMO_KEY}"})
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


def _gated_stream_app(gate: threading.Event) -> web.Application:
    """An upstream that sends its head at once and its first event only when the test opens the gate."""

    async def chat(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        await asyncio.to_thread(gate.wait, 10)
        await out.write(b'data: {"id":"c","object":"chat.completion.chunk","choices":[]}\n\ndata: [DONE]\n\n')
        await out.write_eof()
        return out

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before {marker!r}"
        data += chunk
    return data


def test_the_head_of_a_stream_reaches_the_caller_before_its_first_event(proxy_factory):
    """The proxy holds its head only to send it with an event that is already there, never to wait for one."""
    gate = threading.Event()
    with ServerThread(_gated_stream_app(gate), name="gated") as upstream:
        proxy = proxy_factory(basic_policy(upstream.url))
        body = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"go"}]}'
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            send_post(sock, "/v1/chat/completions", body, {"authorization": f"Bearer {DEMO_KEY}"})
            head = _read_until(sock, b"\r\n\r\n")
            assert not gate.is_set()
            assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
            gate.set()
            assert b"[DONE]" in _read_until(sock, b"[DONE]")

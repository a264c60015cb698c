"""One owner per upstream answer: nothing stays leased, completion comes at the terminal event, proxies honoured."""

from __future__ import annotations

import socket

import aiohttp
import openai
import orjson
import pytest

from proxy.app import HANDLER
from tests.fixtures.hostile_upstream import HostileUpstream
from tests.fixtures.ledger import wait_rows
from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "Say something short."}]


def connections(proxy) -> tuple[int, int]:
    """(held, idle in the pool) of the proxy's upstream transport."""
    transport = proxy.app[HANDLER].transport

    async def read() -> tuple[int, int]:
        return transport.connections()

    return proxy.run(read())


def breakers(proxy) -> list[dict]:
    status, body = proxy.get("/admin/status", {"authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 200
    return orjson.loads(body)["circuit_breakers"]


async def post(url: str, path: str = "/v1/ok/chat/completions") -> tuple[int, bytes]:
    headers = {"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"}
    body = orjson.dumps({"model": "m", "messages": MESSAGES})
    async with aiohttp.ClientSession() as session, session.post(url + path, data=body, headers=headers) as response:
        return response.status, await response.read()


async def test_a_caller_gone_while_a_short_body_is_read_leaves_nothing_leased(proxy_factory):
    breaker = "circuit_breaker: {failure_threshold: 1, half_open_max_calls: 1}"
    with HostileUpstream() as hostile:
        text = basic_policy(hostile.url).replace("protocol: openai\n", f"protocol: openai\n    {breaker}\n", 1)
        proxy = proxy_factory(text)
        body = orjson.dumps({"model": "m", "messages": MESSAGES})
        head = (
            b"POST /v1/hold-short-body/chat/completions HTTP/1.1\r\nhost: localhost\r\n"
            b"content-type: application/json\r\n"
            b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n" % (DEMO_KEY.encode(), len(body))
        )
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(head + body)
            assert hostile.holding.wait(5), "the upstream sent its head and part of a short body"
        wait_for(lambda: proxy.metric("agent_proxy_requests_in_flight") == 0)
        wait_for(lambda: connections(proxy)[0] == 0)
        for row in breakers(proxy):
            assert row["in_flight"] == 0 and row["probes_in_flight"] == 0, row
            assert row["state"] == "closed", "a caller gone is no verdict on the upstream"
        status, answer = await post(proxy.url)
        assert status == 201 and orjson.loads(answer) == {"own": "/v1/ok/chat/completions"}


def test_sequential_sdk_streams_with_one_slot_are_never_refused_and_every_row_is_exact(
    proxy_factory, fake_upstream, tmp_path
):
    ledger = tmp_path / "ledger.sqlite3"
    extra = f"""
ledger: {{path: {ledger}, flush_interval_ms: 20}}
callers:
  default: {{rate_limit: {{concurrent: 1}}}}
"""
    proxy = proxy_factory(basic_policy(fake_upstream.url, extra))
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    reported = []
    for _ in range(100):  # the SDK stops reading at `data: [DONE]` and hangs up
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-session-id": "sequential"},
        )
        usage = [chunk.usage for chunk in stream if chunk.usage is not None]
        assert len(usage) == 1
        reported.append((usage[0].prompt_tokens, usage[0].completion_tokens))
    rows = wait_rows(ledger, "sequential", 100)
    assert [(row["input_tokens"], row["output_tokens"]) for row in rows] == reported
    assert {(row["status"], row["outcome"], row["estimated"]) for row in rows} == {(200, "ok", 0)}


async def test_idle_pooled_connections_are_closed_at_keepalive_expiry(proxy_factory):
    with HostileUpstream() as hostile:
        proxy = proxy_factory(basic_policy(hostile.url, "server: {upstream_pool: {keepalive_s: 0.2}}"))
        status, _ = await post(proxy.url)
        assert status == 201
        assert connections(proxy) == (0, 1), "pooled after the answer"
        wait_for(lambda: connections(proxy) == (0, 0))


TOOL_POLICY = """
version: 1
upstreams:
  tool: {{url: "http://127.0.0.1:9", protocol: http{proxy}}}
routes:
  - {{prefix: /tools/, upstream: tool, auth: none}}
"""


async def call_tool(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url + "/tools/search?q=1") as response:
        return response.status


@pytest.mark.parametrize("where", ["policy", "environment"])
async def test_an_upstream_is_reached_through_its_http_proxy(proxy_factory, monkeypatch, where):
    with HostileUpstream() as forward_proxy:  # answers any request, and records its target
        if where == "policy":
            proxy = proxy_factory(TOOL_POLICY.format(proxy=f", proxy: {forward_proxy.url}"))
        else:
            monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            proxy = proxy_factory(TOOL_POLICY.format(proxy=""))
        assert await call_tool(proxy.url) == 200
        assert forward_proxy.targets == [b"http://127.0.0.1:9/tools/search?q=1"]


@pytest.mark.parametrize("setting", ["no_proxy", "direct"])
async def test_no_proxy_and_direct_bypass_the_environments_proxy(proxy_factory, monkeypatch, setting):
    with HostileUpstream() as forward_proxy:
        monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
        if setting == "no_proxy":
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            proxy = proxy_factory(TOOL_POLICY.format(proxy=""))
        else:
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            proxy = proxy_factory(TOOL_POLICY.format(proxy=", proxy: direct"))
        assert await call_tool(proxy.url) == 502  # straight to the closed port
        assert forward_proxy.targets == []


async def test_sequential_requests_reuse_one_pooled_connection(proxy_factory):
    with HostileUpstream() as hostile:
        proxy = proxy_factory(basic_policy(hostile.url))
        for _ in range(5):
            status, _ = await post(proxy.url)
            assert status == 201
        assert hostile.connections == 1

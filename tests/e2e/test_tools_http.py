"""HTTP tools through the proxy: a body schema, a tool's timeout, no retried POST, signed requests, per-tool metrics.

The tool server is a real aiohttp app on a loopback socket; it verifies the proxy's
signature with the documented verifier (`verify_signed_request`) and counts what it
receives, so a request the proxy refused or did not retry is proven absent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from proxy.auth.signing import InvalidSignature, verify_signed_request
from tests.fixtures.http import request
from tests.fixtures.proxy_server import DEMO_KEY, DEMO_KEY_SHA256, ProxyServer
from tests.fixtures.servers import ServerThread
from tests.fixtures.waiting import wait_for

SECRET = "tool-signing-secret-0123456789-abcdef"
AUTH = {"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"}


class ToolServer:
    """Records (path, method, verified caller) per request; `release` lets the slow tool answer."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []
        self.release = asyncio.Event()
        self.thread = ServerThread(self._app, name="tool-server")

    async def _app(self) -> web.Application:
        self.release = asyncio.Event()  # made in the server's loop
        app = web.Application()
        app.router.add_route("*", "/search", self.search)
        app.router.add_route("*", "/slow", self.slow)
        app.router.add_route("*", "/flaky", self.flaky)
        return app

    async def _verified(self, request: web.Request) -> tuple[bytes, str | None]:
        body = await request.read()
        try:
            who = verify_signed_request({"tools-1": SECRET}, request.method, request.path_qs, request.headers, body)
            caller = who.caller
        except InvalidSignature as err:
            caller = f"invalid: {err.reason}"
        self.seen.append((request.path, request.method, caller))
        return body, caller

    async def search(self, request: web.Request) -> web.Response:
        body, caller = await self._verified(request)
        return web.json_response({"caller": caller, "query": orjson.loads(body)["query"], "hits": []})

    async def slow(self, request: web.Request) -> web.Response:
        await self._verified(request)
        await self.release.wait()
        return web.json_response({"late": True})

    async def flaky(self, request: web.Request) -> web.Response:
        await self._verified(request)
        return web.json_response({"error": "down"}, status=503)

    def count(self, path: str, method: str) -> int:
        return sum(1 for p, m, _ in self.seen if p == path and m == method)


SEARCH_SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 1}, "limit": {"type": "integer", "maximum": 50}},
    "required": ["query"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tool_server() -> Iterator[ToolServer]:
    server = ToolServer()
    with server.thread:
        yield server


@pytest.fixture(scope="module")
def proxy(tool_server: ToolServer) -> Iterator[ProxyServer]:
    policy = f"""
version: 1
upstreams:
  tools:
    url: {tool_server.thread.url}
    protocol: http
    sign_requests: true
    signing_key: {{id: tools-1, secret: {SECRET}}}
    retries: {{attempts: 3, backoff_base_s: 0.01, backoff_max_s: 0.02}}
    circuit_breaker: {{enabled: false}}
    timeouts: {{connect_s: 2, first_byte_s: 10, idle_s: 10, total_s: 30}}
routes:
  - name: search
    prefix: /tools/search
    rewrite_prefix: /search
    upstream: tools
    tool: search
    stages: {{toolgov: {{body_schema: {orjson.dumps(SEARCH_SCHEMA).decode()}}}}}
  - {{name: slow, prefix: /tools/slow, rewrite_prefix: /slow, upstream: tools, tool: slow}}
  - {{name: limited, prefix: /tools/limited, rewrite_prefix: /search, upstream: tools, tool: limited}}
  - {{name: flaky, prefix: /tools/flaky, rewrite_prefix: /flaky, upstream: tools, tool: flaky}}
  - {{name: flaky-safe, prefix: /safe/flaky, rewrite_prefix: /flaky, upstream: tools, tool: flaky, retry_unsafe: true}}
auth:
  static_keys:
    - {{caller: demo, id: demo-key, sha256: {DEMO_KEY_SHA256}}}
callers:
  demo: {{tools: [search, slow, flaky, limited]}}
stages:
  toolgov:
    tools:
      slow: {{timeout_s: 0.5}}
      limited: {{requests_per_minute: 1}}
"""
    with ProxyServer(policy) as server:
        yield server


def post(proxy: ProxyServer, path: str, body: Any) -> Any:
    return request("POST", proxy.url + path, body=orjson.dumps(body), headers=AUTH)


def test_a_valid_body_reaches_the_tool_signed(proxy, tool_server):
    response = post(proxy, "/tools/search", {"query": "mcp", "limit": 5})
    assert response.status == 200
    assert response.json() == {"caller": "demo", "query": "mcp", "hits": []}  # the verifier accepted the signature
    labels = {"server": "search", "tool": "search", "outcome": "ok"}
    wait_for(lambda: proxy.metric("agent_proxy_tool_calls_total", labels) >= 1)
    assert proxy.metric("agent_proxy_tool_call_seconds_count", {"server": "search", "tool": "search"}) >= 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limit": 5}, "'body.query' is required"),
        ({"query": 7}, "'body.query' is invalid: expected string"),
        ({"query": "x", "limit": 500}, "'body.limit' is invalid: fails maximum 50"),
        ({"query": "x", "extra": 1}, "'body.extra' is not an allowed field"),
    ],
)
def test_a_body_breaking_the_schema_gets_a_400_naming_the_field(proxy, tool_server, body, field):
    before = tool_server.count("/search", "POST")
    response = post(proxy, "/tools/search", body)
    assert response.status == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_tool_body" and field in error["message"]
    assert tool_server.count("/search", "POST") == before


def test_a_slow_tool_times_out_at_its_own_timeout(proxy, tool_server):
    response = post(proxy, "/tools/slow", {})
    assert response.status == 504
    assert tool_server.count("/slow", "POST") == 1
    labels = {"server": "slow", "tool": "slow", "outcome": "timeout"}
    wait_for(lambda: proxy.metric("agent_proxy_tool_calls_total", labels) == 1)
    assert proxy.metric("agent_proxy_tool_errors_total", {"server": "slow", "kind": "timeout"}) == 1
    tool_server.thread.loop.call_soon_threadsafe(tool_server.release.set)


def test_a_post_is_not_retried_unless_the_route_says_it_is_safe(proxy, tool_server):
    assert post(proxy, "/tools/flaky", {}).status == 503
    assert tool_server.count("/flaky", "POST") == 1
    assert request("GET", proxy.url + "/tools/flaky", headers=AUTH).status == 503
    assert tool_server.count("/flaky", "GET") == 3  # idempotent: every attempt
    assert post(proxy, "/safe/flaky", {}).status == 503
    assert tool_server.count("/flaky", "POST") == 1 + 3  # `retry_unsafe: true`
    wait_for(lambda: proxy.metric("agent_proxy_tool_errors_total", {"server": "flaky", "kind": "upstream_error"}) == 3)


def test_a_tool_over_its_rate_limit_gets_a_429_without_reaching_the_server(proxy, tool_server):
    before = tool_server.count("/search", "POST")
    assert post(proxy, "/tools/limited", {"query": "a"}).status == 200
    refused = post(proxy, "/tools/limited", {"query": "b"})
    assert refused.status == 429 and refused.json()["error"]["code"] == "tool_rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert tool_server.count("/search", "POST") == before + 1

"""A hostile MCP server: a huge `tools/list`, an endless SSE answer. The upstream's own bounds hold.

The server is a raw aiohttp app that speaks just enough JSON-RPC to misbehave; the caller
gets a JSON-RPC-shaped error (or the stream's error event), never an unbounded answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.fixtures.proxy_server import ADMIN_KEY, ADMIN_KEY_SHA256, DEMO_KEY, DEMO_KEY_SHA256, ProxyServer
from tests.fixtures.servers import ServerThread
from tests.fixtures.waiting import wait_for

MIB = 1024 * 1024
HEADERS = {
    "authorization": f"Bearer {DEMO_KEY}",
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
}


def huge_tools(count: int) -> list[dict[str, object]]:
    schema = {"type": "object", "properties": {"q": {"type": "string", "description": "x" * 200}}}
    return [{"name": f"tool_{i}", "inputSchema": schema} for i in range(count)]


async def mcp(request: web.Request) -> web.StreamResponse:
    message = orjson.loads(await request.read())
    method, id_ = message.get("method"), message.get("id")
    if method == "tools/list" and request.headers.get("x-shape") == "small":
        result = {"tools": huge_tools(3), "cacheScope": "public", "ttlMs": 60_000}
        return web.json_response({"jsonrpc": "2.0", "id": id_, "result": result})
    if method == "tools/list" and request.headers.get("x-shape") == "json":
        return web.json_response({"jsonrpc": "2.0", "id": id_, "result": {"tools": huge_tools(20_000)}})
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    if method == "tools/list":  # one event larger than the event bound
        event = {"jsonrpc": "2.0", "id": id_, "result": {"tools": huge_tools(20_000)}}
        await response.write(b"event: message\ndata: " + orjson.dumps(event) + b"\n\n")
        return response
    note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}
    chunk = (b"event: message\ndata: " + orjson.dumps(note) + b"\n\n") * 100
    while True:  # tools/call: progress forever, never the answer
        await response.write(chunk)
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
def hostile() -> Iterator[ServerThread]:
    app = web.Application()
    app.router.add_post("/mcp", mcp)
    with ServerThread(app, name="hostile-mcp") as server:
        yield server


@pytest.fixture(scope="module")
def proxy(hostile: ServerThread) -> Iterator[ProxyServer]:
    limits = f"{{max_body_bytes: {MIB}, max_event_bytes: {MIB}, max_response_bytes: {4 * MIB}}}"
    policy = f"""
version: 1
upstreams:
  evil: {{url: "{hostile.url}", protocol: mcp, limits: {limits}, circuit_breaker: {{enabled: false}},
          timeouts: {{connect_s: 2, first_byte_s: 5, idle_s: 5, total_s: 20}}}}
routes:
  - {{name: evil, prefix: /mcp, upstream: evil, tool: evil}}
auth:
  static_keys:
    - {{caller: demo, id: demo-key, sha256: {DEMO_KEY_SHA256}}}
    - {{caller: narrow, id: narrow-key, sha256: {ADMIN_KEY_SHA256}}}
callers:
  demo: {{tools: [evil]}}
  narrow: {{tools: ["evil:tool_1"]}}
"""
    with ProxyServer(policy) as server:
        yield server


async def post(proxy: ProxyServer, message: dict[str, object], headers: dict[str, str]) -> tuple[int, str, bytes]:
    async with (
        asyncio.timeout(15),
        aiohttp.ClientSession() as http,
        http.post(proxy.url + "/mcp", data=orjson.dumps(message), headers=headers) as response,
    ):
        return response.status, response.headers.get("content-type", ""), await response.read()


LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "tool_1", "arguments": {}}}


async def test_a_huge_json_tools_list_is_refused_with_a_json_rpc_error(proxy):
    status, _, body = await post(proxy, LIST, HEADERS | {"x-shape": "json"})
    assert status == 502
    answer = orjson.loads(body)
    assert (
        answer["jsonrpc"] == "2.0" and answer["error"]["code"] == -32000 and "larger than" in answer["error"]["message"]
    )


async def test_a_huge_sse_tools_list_event_ends_the_stream_with_an_error(proxy):
    status, content_type, body = await post(proxy, LIST, HEADERS)
    assert status == 200 and content_type.startswith("text/event-stream")
    assert len(body) < 4096 and b"tool_1" not in body
    assert b'"code":-32000' in body and b"event" in body


async def test_an_endless_sse_answer_is_cut_at_the_response_bound(proxy):
    status, _, body = await post(proxy, CALL, HEADERS)
    assert status == 200
    assert 3 * MIB < len(body) <= 4 * MIB + 64 * 1024
    assert body.rstrip().endswith(b"}") and b"larger than" in body[-512:]
    labels = {"server": "evil", "tool": "tool_1", "outcome": "upstream_error"}
    wait_for(lambda: proxy.metric("agent_proxy_tool_calls_total", labels) == 1)


async def test_a_filtered_list_is_no_longer_cacheable_for_everyone(proxy):
    narrow = HEADERS | {"authorization": f"Bearer {ADMIN_KEY}", "x-shape": "small"}
    _, _, body = await post(proxy, LIST, narrow)
    result = orjson.loads(body)["result"]
    assert [tool["name"] for tool in result["tools"]] == ["tool_1"]
    assert result["cacheScope"] == "private" and result["ttlMs"] == 60_000
    _, _, body = await post(proxy, LIST, HEADERS | {"x-shape": "small"})  # nothing removed: the server's word stands
    assert orjson.loads(body)["result"]["cacheScope"] == "public"

"""MCP through the proxy: a real `mcp` SDK server (streamable HTTP) and the real `mcp` SDK client.

Both protocol flows the SDK speaks are driven: the initialize handshake with a session
(`mode="legacy"`, revisions up to 2025-11-25) and the session-less 2026-07-28 revision
(`mode="auto"` probes `server/discover`). The server records every call it runs, so a
refused call is proven never to have reached it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import orjson
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.fixtures.http import request
from tests.fixtures.ledger import ledger_rows
from tests.fixtures.mcp_server import PII_EMAIL, McpServerThread
from tests.fixtures.proxy_server import ADMIN_KEY, ADMIN_KEY_SHA256, DEMO_KEY, DEMO_KEY_SHA256, ProxyServer
from tests.fixtures.waiting import wait_for

MODES = ["legacy", "auto"]


def mcp_policy(server_url: str, ledger: Path) -> str:
    return f"""
version: 1
ledger: {{path: "{ledger}", flush_interval_ms: 50}}
upstreams:
  files-mcp:
    url: {server_url}
    protocol: mcp
    timeouts: {{connect_s: 2, first_byte_s: 10, idle_s: 10, total_s: 30}}
routes:
  - {{name: files, prefix: /mcp, upstream: files-mcp, tool: files}}
auth:
  static_keys:
    - {{caller: demo, id: demo-key, sha256: {DEMO_KEY_SHA256}}}
    - {{caller: ops, id: ops-key, sha256: {ADMIN_KEY_SHA256}}}
callers:
  demo: {{tools: ["files:read_*", "files:whoami", "files:progress"]}}
  ops: {{tools: [files]}}
stages:
  redaction: {{output: [email]}}
  toolgov:
    tools:
      "read_notes": {{requests_per_minute: 2}}
      "slow": {{timeout_s: 0.5}}
"""


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpServerThread]:
    with McpServerThread() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(mcp_server: McpServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    ledger = tmp_path_factory.mktemp("mcp") / "ledger.db"
    with ProxyServer(mcp_policy(mcp_server.url, ledger)) as server:
        server.ledger = ledger  # type: ignore[attr-defined]
        yield server


def connect(proxy: ProxyServer, mode: str, key: str = DEMO_KEY, **kwargs: Any) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=60))
    return Client(streamable_http_client(proxy.url + "/mcp", http_client=http), mode=mode, **kwargs)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("mode", MODES)
def test_tools_list_shows_only_the_tools_the_caller_may_call(proxy, mode):
    async def names(key: str) -> list[str]:
        async with connect(proxy, mode, key) as client:
            return sorted(tool.name for tool in (await client.list_tools()).tools)

    assert run(names(DEMO_KEY)) == ["progress", "read_file", "read_notes", "whoami"]
    assert run(names(ADMIN_KEY)) == [
        "delete_file",
        "progress",
        "read_file",
        "read_notes",
        "slow",
        "touch_tools",
        "whoami",
    ]
    assert proxy.metric("agent_proxy_tools_hidden_total", {"server": "files"}) >= 2


@pytest.mark.parametrize("mode", MODES)
def test_an_allowed_call_reaches_the_server(proxy, mcp_server, mode):
    async def call() -> Any:
        async with connect(proxy, mode) as client:
            await client.list_tools()
            return await client.call_tool("read_file", {"path": f"/etc/{mode}"})

    result = run(call())
    assert not result.is_error and result.content[0].text == f"contents of /etc/{mode}"
    assert {"path": f"/etc/{mode}", "max_bytes": 1024} in mcp_server.called("read_file")
    labels = {"server": "files", "tool": "read_file", "outcome": "ok"}
    wait_for(lambda: proxy.metric("agent_proxy_tool_calls_total", labels) >= 1)


@pytest.mark.parametrize("mode", MODES)
def test_a_forbidden_call_is_refused_without_contacting_the_server(proxy, mcp_server, mode):
    path = f"/precious/{mode}"

    async def call() -> MCPError:
        async with connect(proxy, mode) as client:
            with pytest.raises(MCPError) as refused:
                await client.call_tool("delete_file", {"path": path})
            # The session goes on: an allowed call after the refusal works.
            assert (await client.call_tool("read_notes", {"topic": mode})).content[0].text == f"notes on {mode}"
            return refused.value

    error = run(call())
    assert error.error.code == -32003 and "files:delete_file" in error.error.message
    assert mcp_server.called("delete_file") == []
    labels = {"server": "files", "tool": "delete_file", "outcome": "forbidden"}
    wait_for(lambda: proxy.metric("agent_proxy_tool_calls_total", labels) >= 1)

    # The operator's profile allows the whole server: the same call goes through.
    async def as_ops() -> Any:
        async with connect(proxy, mode, ADMIN_KEY) as client:
            return await client.call_tool("delete_file", {"path": path})

    assert run(as_ops()).content[0].text == f"deleted {path}"
    assert mcp_server.called("delete_file") == [{"path": path}]
    mcp_server.calls.clear()


@pytest.mark.parametrize("mode", MODES)
def test_invalid_arguments_are_refused_naming_the_field(proxy, mcp_server, mode):
    async def call(arguments: dict[str, Any]) -> MCPError:
        async with connect(proxy, mode) as client:
            await client.list_tools()  # the proxy learns the schemas of the session's tools
            with pytest.raises(MCPError) as refused:
                await client.call_tool("read_file", arguments)
            return refused.value

    before = len(mcp_server.called("read_file"))
    wrong_type = run(call({"path": 42}))
    assert wrong_type.error.code == -32602
    assert "'arguments.path' is invalid: expected string" in wrong_type.error.message
    missing = run(call({"max_bytes": 10}))
    assert "'arguments.path' is required" in missing.error.message
    assert len(mcp_server.called("read_file")) == before  # neither reached the server


@pytest.mark.parametrize("mode", MODES)
def test_pii_in_a_tool_result_is_redacted(proxy, mode):
    async def call() -> Any:
        async with connect(proxy, mode) as client:
            return await client.call_tool("whoami", {})

    result = run(call())
    text = result.content[0].text
    assert PII_EMAIL not in text and "[EMAIL]" in text
    assert PII_EMAIL not in orjson.dumps(result.structured_content).decode()


def rpc(proxy: ProxyServer, headers: dict[str, str], message: dict[str, Any]) -> Any:
    return request("POST", proxy.url + "/mcp", body=orjson.dumps(message), headers=headers)


def open_session(proxy: ProxyServer, key: str = DEMO_KEY) -> dict[str, str]:
    """The initialize handshake by hand: the headers a session's later requests carry."""
    headers = {
        "authorization": f"Bearer {key}",
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
    }
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    first = rpc(proxy, headers, init)
    assert first.status == 200
    headers |= {"mcp-session-id": first.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    assert rpc(proxy, headers, {"jsonrpc": "2.0", "method": "notifications/initialized"}).status == 202
    return headers


def test_the_session_id_is_kept_and_delete_ends_it(proxy):
    headers = open_session(proxy)
    listed = rpc(proxy, headers, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert listed.status == 200 and b"read_file" in listed.body and b"delete_file" not in listed.body
    assert request("DELETE", proxy.url + "/mcp", headers=headers).status == 200
    gone = rpc(proxy, headers, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    assert gone.status == 404  # the server ended the session the DELETE named


async def test_the_session_get_stream_carries_server_notifications(proxy):
    headers = await asyncio.to_thread(open_session, proxy, ADMIN_KEY)
    stream_headers = {k: v for k, v in headers.items() if k != "content-type"} | {"accept": "text/event-stream"}
    async with aiohttp.ClientSession() as http, http.get(proxy.url + "/mcp", headers=stream_headers) as stream:
        assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
        call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "touch_tools", "arguments": {}}}
        answered = await asyncio.to_thread(rpc, proxy, headers, call)
        assert answered.status == 200 and b"touched" in answered.body
        received = b""
        async with asyncio.timeout(10):
            while b"notifications/tools/list_changed" not in received:
                received += await stream.content.readany()


@pytest.mark.parametrize("mode", MODES)
def test_notifications_on_a_call_stream_pass_through(proxy, mode):
    seen: list[str | None] = []

    async def progressed(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message)

    async def call() -> Any:
        async with connect(proxy, mode) as client:
            return await client.call_tool("progress", {"steps": 3}, progress_callback=progressed)

    result = run(call())
    assert result.content[0].text == "done"
    assert seen == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]


def test_a_tool_rate_limit_is_per_caller_and_tool(proxy, mcp_server):
    async def calls() -> list[str]:
        out = []
        async with connect(proxy, "legacy", ADMIN_KEY) as client:
            for i in range(3):
                try:
                    out.append((await client.call_tool("read_notes", {"topic": str(i)})).content[0].text)
                except MCPError as err:
                    out.append(f"refused {err.error.code}")
        return out

    before = len(mcp_server.called("read_notes"))
    assert run(calls()) == ["notes on 0", "notes on 1", "refused -32004"]
    assert len(mcp_server.called("read_notes")) == before + 2


def test_the_ledger_has_each_tool_call(proxy):
    """One row per call, whatever became of it: served, refused, or stopped at its arguments."""

    async def calls() -> None:
        async with connect(proxy, "legacy") as client:
            await client.list_tools()
            await client.call_tool("read_file", {"path": "/etc/ledger"})
            for name, arguments in (("delete_file", {"path": "/etc/ledger"}), ("read_file", {"path": 42})):
                with pytest.raises(MCPError):
                    await client.call_tool(name, arguments)
        async with connect(proxy, "legacy", ADMIN_KEY) as client:
            await client.call_tool("delete_file", {"path": "/tmp/ledger"})

    run(calls())
    path = proxy.ledger  # type: ignore[attr-defined]
    expected = {
        ("demo", "files", "read_file", "ok"),
        ("demo", "files", "delete_file", "forbidden"),
        ("demo", "files", "read_file", "invalid_arguments"),
        ("ops", "files", "delete_file", "ok"),
    }

    def found() -> set[tuple[str, str, str, str]]:
        rows = [row for row in ledger_rows(path) if row["tool"] is not None]
        return {(row["caller"], row["tool_server"], row["tool"], row["tool_outcome"]) for row in rows}

    wait_for(lambda: found() >= expected, timeout=10)
    assert all(row["latency_ms"] > 0 for row in ledger_rows(path) if row["tool"] is not None)


@pytest.mark.parametrize("mode", MODES)
def test_a_slow_tool_ends_at_its_timeout_with_an_error_for_its_call(proxy, mcp_server, mode):
    async def call() -> MCPError:
        async with connect(proxy, mode, ADMIN_KEY) as client:
            with pytest.raises(MCPError) as failed:
                await client.call_tool("slow", {"seconds": 5})
            return failed.value

    error = run(call())
    assert "did not answer in time" in error.error.message or "stopped sending data" in error.error.message
    labels = {"server": "files", "tool": "slow", "outcome": "timeout"}
    wait_for(lambda: proxy.metric("agent_proxy_tool_calls_total", labels) >= 1)

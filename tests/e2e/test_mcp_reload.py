"""A policy reload in the middle of MCP sessions: what the sessions listed is still checked, what the new
policy forbids is refused at once, and changed schema bounds start afresh.

A real `mcp` SDK server and the real SDK client; the policy file is rewritten and reloaded as
SIGHUP does (`PolicyHolder.reload`, awaited), between a session's `tools/list` and its calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proxy.kept import FRESH
from tests.fixtures.logs import captured_log_lines
from tests.fixtures.mcp_server import McpServerThread
from tests.fixtures.proxy_server import DEMO_KEY, DEMO_KEY_SHA256, ProxyServer
from tests.fixtures.waiting import wait_for

MODES = ["legacy", "auto"]
READ_ALLOWED = '["files:read_*", "files:whoami"]'
UNCHECKED = {"stage": "toolgov", "decision": "unchecked_arguments", "mode": "enforce"}


def policy(server_url: str, tools: str = READ_ALLOWED, rpm: int = 100, max_sessions: int = 1024) -> str:
    return f"""
version: 1
server: {{reload_interval_s: 3600}}  # reloaded by the test, as SIGHUP does, never by the poll
upstreams:
  files-mcp: {{url: "{server_url}", protocol: mcp}}
routes:
  - {{name: files, prefix: /mcp, upstream: files-mcp, tool: files}}
auth:
  static_keys:
    - {{caller: demo, id: demo-key, sha256: {DEMO_KEY_SHA256}}}
callers:
  demo: {{tools: {tools}}}
stages:
  toolgov:
    max_sessions: {max_sessions}
    tools:
      "read_notes": {{requests_per_minute: {rpm}}}
"""


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpServerThread]:
    with McpServerThread() as server:
        yield server


@pytest.fixture
def policy_file(tmp_path: Path, mcp_server: McpServerThread) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(policy(mcp_server.url))
    return path


def connect(proxy: ProxyServer, mode: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {DEMO_KEY}"}, timeout=httpx2.Timeout(30, read=60))
    return Client(streamable_http_client(proxy.url + "/mcp", http_client=http), mode=mode)


async def reload(proxy: ProxyServer, path: Path, text: str) -> None:
    """Rewrite the file and reload it in the proxy's loop, awaiting the result."""

    def rewrite_and_reload() -> bool:
        path.write_text(text)
        return proxy.run(proxy.holder.reload("test"))

    before = proxy.metric("agent_proxy_policy_reloads_total", {"result": "ok"})
    assert await asyncio.to_thread(rewrite_and_reload)
    assert proxy.metric("agent_proxy_policy_reloads_total", {"result": "ok"}) == before + 1


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("mode", MODES)
def test_schemas_listed_before_a_reload_are_still_checked(proxy_factory, mcp_server, policy_file, mode):
    proxy = proxy_factory(path=policy_file)
    refused_calls = {"server": "files", "tool": "read_file", "outcome": "invalid_arguments"}

    async def session() -> MCPError:
        async with connect(proxy, mode) as client:
            await client.list_tools()  # once per session, as agents do
            await reload(proxy, policy_file, policy(mcp_server.url, rpm=101))  # a harmless edit
            with pytest.raises(MCPError) as refused:
                await client.call_tool("read_file", {"path": 42})
            assert (await client.call_tool("read_file", {"path": "/after"})).content[0].text == "contents of /after"
            return refused.value

    unchecked = proxy.metric("agent_proxy_stage_decisions_total", UNCHECKED)
    refused = run(session())
    assert refused.error.code == -32602
    assert "'arguments.path' is invalid: expected string" in refused.error.message
    assert mcp_server.called("read_file")[-1] == {"path": "/after", "max_bytes": 1024}
    assert {"path": 42, "max_bytes": 1024} not in mcp_server.called("read_file")  # the proxy refused it
    wait_for(lambda: proxy.metric("agent_proxy_tool_calls_total", refused_calls) == 1)
    assert proxy.metric("agent_proxy_stage_decisions_total", UNCHECKED) == unchecked  # every call was checked


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_removed_from_the_allowlist_is_refused_at_once(proxy_factory, mcp_server, policy_file, mode):
    """The schemas outlive the reload; the permission to call does not: it is the new policy's."""
    proxy = proxy_factory(path=policy_file)

    async def session() -> tuple[MCPError, list[str]]:
        async with connect(proxy, mode) as client:
            listed = await client.list_tools()
            assert "read_notes" in {tool.name for tool in listed.tools}
            await reload(proxy, policy_file, policy(mcp_server.url, tools='["files:read_file"]'))
            with pytest.raises(MCPError) as refused:
                await client.call_tool("read_notes", {"topic": "plans"})
            assert (await client.call_tool("read_file", {"path": "/still"})).content[0].text == "contents of /still"
            relisted = await client.list_tools()
            return refused.value, sorted(tool.name for tool in relisted.tools)

    before = len(mcp_server.called("read_notes"))
    refused, relisted = run(session())
    assert refused.error.code == -32003 and "files:read_notes" in refused.error.message
    assert len(mcp_server.called("read_notes")) == before  # never reached the server
    assert relisted == ["read_file"]


def test_changed_schema_bounds_start_a_fresh_cache(proxy_factory, mcp_server, policy_file):
    proxy = proxy_factory(path=policy_file)

    async def session() -> None:
        async with connect(proxy, "legacy") as client:
            await client.list_tools()
            with captured_log_lines() as logs:
                await reload(proxy, policy_file, policy(mcp_server.url, max_sessions=512))
            fresh = [line for line in logs.parsed() if line.get("kind") == "tool schemas"]
            assert [(line["level"], line["msg"]) for line in fresh] == [("info", FRESH)]
            # The new cache has not seen this session's list: the call is the server's to check.
            assert (await client.call_tool("read_file", {"path": "/fresh"})).content[0].text == "contents of /fresh"
            await client.list_tools()
            with pytest.raises(MCPError) as refused:
                await client.call_tool("read_file", {"path": 7})
            assert refused.value.error.code == -32602

    unchecked = proxy.metric("agent_proxy_stage_decisions_total", UNCHECKED)
    run(session())
    wait_for(lambda: proxy.metric("agent_proxy_stage_decisions_total", UNCHECKED) == unchecked + 1)
    assert {"path": 7, "max_bytes": 1024} not in mcp_server.called("read_file")

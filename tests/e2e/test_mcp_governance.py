"""MCP governance on the wire: batches, routing headers, malformed bodies, a tool's timeout and breaker.

Raw JSON-RPC over streamable HTTP against a real `mcp` SDK server (JSON answers), for what
the SDK's client never sends: batches (revisions before 2025-06-18), headers that disagree
with the body, bodies that are not JSON-RPC.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.fixtures.http import request
from tests.fixtures.mcp_server import McpServerThread
from tests.fixtures.proxy_server import DEMO_KEY, DEMO_KEY_SHA256, ProxyServer
from tests.fixtures.waiting import wait_for

HEADERS = {
    "authorization": f"Bearer {DEMO_KEY}",
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2026-07-28",
}
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpServerThread]:
    with McpServerThread(json_response=True) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(mcp_server: McpServerThread) -> Iterator[ProxyServer]:
    policy = f"""
version: 1
upstreams:
  files-mcp: {{url: "{mcp_server.url}", protocol: mcp}}
routes:
  - {{name: files, prefix: /mcp, upstream: files-mcp, tool: files}}
  - {{name: local, prefix: /local/mcp, rewrite_prefix: /mcp, upstream: files-mcp, tool: files, auth: none}}
  - name: trial
    prefix: /trial/mcp
    rewrite_prefix: /mcp
    upstream: files-mcp
    tool: files
    stages: {{toolgov: {{mode: shadow}}}}
auth:
  static_keys:
    - {{caller: demo, id: demo-key, sha256: {DEMO_KEY_SHA256}}}
callers:
  demo: {{tools: ["files:read_*", "files:slow"]}}
stages:
  toolgov:
    tools:
      slow: {{timeout_s: 0.3, circuit_breaker: {{failure_threshold: 1, recovery_timeout_s: 60}}}}
"""
    with ProxyServer(policy) as server:
        yield server


def call(id_: int, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    params = {"name": tool, "arguments": arguments, "_meta": META}
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params}


def post(proxy: ProxyServer, body: Any, headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return request("POST", proxy.url + "/mcp", body=raw, headers=headers or HEADERS)


def modern(tool: str) -> dict[str, str]:
    return HEADERS | {"mcp-method": "tools/call", "mcp-name": tool}


def test_an_allowed_modern_call_goes_through(proxy, mcp_server):
    response = post(proxy, call(1, "read_file", {"path": "/m"}), modern("read_file"))
    assert response.status == 200
    assert response.json()["result"]["content"][0]["text"] == "contents of /m"


def test_a_batch_with_a_forbidden_call_is_refused_whole(proxy, mcp_server):
    batch = [
        call(1, "read_file", {"path": "/batch"}),
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}},
        call(2, "delete_file", {"path": "/batch"}),
    ]
    response = post(proxy, batch)
    assert response.status == 200
    answers = {answer["id"]: answer["error"] for answer in response.json()}
    assert answers[2]["code"] == -32003 and "files:delete_file" in answers[2]["message"]
    assert answers[1]["code"] == -32006  # not sent, because of the other one
    assert mcp_server.called("delete_file") == [] and {"path": "/batch", "max_bytes": 1024} not in mcp_server.called(
        "read_file"
    )


def test_a_name_header_that_disagrees_with_the_body_is_refused(proxy, mcp_server):
    before = len(mcp_server.calls)
    response = post(proxy, call(3, "read_file", {"path": "/h"}), modern("read_notes"))
    assert response.json()["error"]["code"] == -32020
    response = post(proxy, call(4, "read_file", {"path": "/h"}), HEADERS | {"mcp-method": "tools/list"})
    assert response.json()["error"]["code"] == -32020
    assert len(mcp_server.calls) == before


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{not json", -32700), (b"[]", -32600), (b'{"id": 1, "method": "tools/call"}', -32600), (b"7", -32600)],
)
def test_a_body_that_is_not_json_rpc_is_answered_by_the_proxy(proxy, mcp_server, body, code):
    before = len(mcp_server.calls)
    response = post(proxy, body)
    assert response.status == 400
    answer = response.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] is None and answer["error"]["code"] == code
    assert len(mcp_server.calls) == before


def test_unknown_methods_pass_through(proxy):
    message = {"jsonrpc": "2.0", "id": 9, "method": "vendor/unknown", "params": {"_meta": META}}
    response = post(proxy, message, HEADERS | {"mcp-method": "vendor/unknown"})
    assert response.json()["error"]["code"] == -32601  # the server's own answer: method not found


def test_a_tool_that_times_out_opens_its_breaker(proxy, mcp_server):
    first = post(proxy, call(5, "slow", {"seconds": 2}), modern("slow"))
    assert first.status == 504 and first.json()["error"]["code"] == -32000
    assert len(mcp_server.called("slow")) == 1
    second = post(proxy, call(6, "slow", {"seconds": 0}), modern("slow"))
    error = second.json()["error"]
    assert second.json()["id"] == 6 and error["code"] == -32005 and "circuit open" in error["message"]
    assert len(mcp_server.called("slow")) == 1  # the open breaker kept it from the server
    for outcome in ("timeout", "circuit_open"):
        labels = {"server": "files", "tool": "slow", "outcome": outcome}
        wait_for(lambda labels=labels: proxy.metric("agent_proxy_tool_calls_total", labels) == 1)
    # Other tools of the server are not affected.
    assert post(proxy, call(7, "read_notes", {"topic": "x"}), modern("read_notes")).status == 200


def test_a_route_without_auth_has_no_allowlist_to_apply(proxy, mcp_server):
    headers = {k: v for k, v in modern("delete_file").items() if k != "authorization"}
    raw = orjson.dumps(call(8, "delete_file", {"path": "/local"}))
    response = request("POST", proxy.url + "/local/mcp", body=raw, headers=headers)
    assert response.status == 200 and response.json()["result"]["content"][0]["text"] == "deleted /local"
    assert mcp_server.called("delete_file") == [{"path": "/local"}]


def test_shadow_mode_records_a_refusal_and_lets_the_call_through(proxy, mcp_server):
    raw = orjson.dumps(call(10, "delete_file", {"path": "/trial"}))
    response = request("POST", proxy.url + "/trial/mcp", body=raw, headers=modern("delete_file"))
    assert response.json()["result"]["content"][0]["text"] == "deleted /trial"
    assert {"path": "/trial"} in mcp_server.called("delete_file")
    decision = {"stage": "toolgov", "decision": "refused:forbidden", "mode": "shadow"}
    wait_for(lambda: proxy.metric("agent_proxy_stage_decisions_total", decision) == 1)
    labels = {"server": "files", "tool": "delete_file", "outcome": "ok"}
    wait_for(lambda: proxy.metric("agent_proxy_tool_calls_total", labels) >= 1)

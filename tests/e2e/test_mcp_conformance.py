"""The official MCP conformance suite, against a reference server directly and through an `mcp` route.

`@modelcontextprotocol/conformance` (pinned in .ci/mcp-conformance/package.json, with Node 22 from npm)
runs every server scenario of its active suite against tests/fixtures/mcp_everything.py, first
directly, then through the proxy several rounds in a row, so that a race shows. A scenario that passes
directly and fails through the proxy fails the test. Skipped when the suite is not installed; .ci/run
installs it.

Also here: server-to-client requests (roots, sampling, elicitation) with the `mcp` Python SDK's client
through the proxy, on the session's GET stream (session after session: the GET must be open upstream
before `tools/call` arrives) and on a POST's own SSE answer.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.http import request
from tests.fixtures.servers import free_port
from tests.fixtures.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
SUITE_DIR = Path(os.environ.get("MCP_CONFORMANCE_DIR", Path.home() / ".cache" / "agent-proxy" / "mcp-conformance"))
SUITE_BIN = SUITE_DIR / "node_modules" / ".bin"
SUITE_VERSION = json.loads((ROOT / ".ci" / "mcp-conformance" / "package.json").read_text())["dependencies"][
    "@modelcontextprotocol/conformance"
]
ROUNDS = 3  # through the proxy, in a row: a race between a session's requests shows as a scenario lost
SESSIONS = 10  # sessions in a row per server request kind and channel
SUMMARY = re.compile(r"^[✓✗] (\S+): (\d+) passed, (\d+) failed", re.MULTILINE)


def _suite_missing() -> str | None:
    if not (SUITE_BIN / "conformance").exists():
        return f"the MCP conformance suite is not installed in {SUITE_DIR} (.ci/run installs it with npm)"
    try:
        version = subprocess.run(
            [SUITE_BIN / "node", "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return f"Node 22 from npm is not installed in {SUITE_DIR} (.ci/run installs it)"
    if not version.startswith("v22."):
        return f"the conformance suite needs Node 22; {SUITE_DIR} has {version.strip()}"
    return None


needs_suite = pytest.mark.skipif(bool(_suite_missing()), reason=_suite_missing() or "")


def policy(upstream: str) -> str:
    return f"""
version: 1
upstreams:
  everything:
    url: {upstream}
    protocol: mcp
    timeouts: {{connect_s: 2, first_byte_s: 30, idle_s: 120, total_s: 300}}
routes:
  - {{name: mcp, prefix: /mcp, upstream: everything, auth: none}}
"""


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The reference server as its own process; its base URL. Its log goes to a file (a pipe nobody reads
    would fill up and stall it)."""
    port = free_port()
    log = tmp_path_factory.mktemp("everything") / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.mcp_everything", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )

    def listening() -> bool:
        if process.poll() is not None:
            return True
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, timeout=30, interval=0.05)
        assert process.poll() is None, log.read_text()[-2000:]
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def run_suite(url: str, out: Path) -> dict[str, bool]:
    """Every scenario of the active server suite against `url`: scenario name -> passed."""
    env = {**os.environ, "PATH": f"{SUITE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [SUITE_BIN / "conformance", "server", "--url", url, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=out.parent,
    )
    results = {name: int(failed) == 0 for name, _, failed in SUMMARY.findall(done.stdout)}
    assert results, f"the suite printed no summary (exit {done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return results


def failures(out: Path) -> dict[str, str]:
    """Why each failed check failed, from the suite's results directory."""
    found = {}
    for checks in out.glob("*/checks.json"):
        for check in json.loads(checks.read_text()):
            if check.get("status") == "FAILURE":
                found[check.get("id", checks.parent.name)] = str(check.get("errorMessage"))[:300]
    return found


@needs_suite
def test_every_scenario_that_passes_directly_passes_through_the_proxy(everything, proxy_factory, tmp_path):
    direct = run_suite(everything + "/mcp", tmp_path / "direct")
    assert len(direct) >= 30 and all(direct.values()), f"the reference server fails directly: {direct}"

    proxy = proxy_factory(policy(everything))
    for round_ in range(ROUNDS):
        through = run_suite(proxy.url + "/mcp", tmp_path / f"proxy-{round_}")
        lost = sorted(name for name, passed in direct.items() if passed and not through.get(name, False))
        why = failures(tmp_path / f"proxy-{round_}")
        assert not lost, f"round {round_ + 1} of {ROUNDS}: pass directly, fail through the proxy: {lost}: {why}"

    # The proxy refused the suite's rebinding request itself (the upstream never saw its Host).
    assert proxy.metric("agent_proxy_host_refusals_total", {"route": "mcp", "header": "host"}) >= ROUNDS


def test_suite_version_is_the_one_the_readme_states():
    assert f"`@modelcontextprotocol/conformance` {SUITE_VERSION}" in (ROOT / "README.md").read_text()


def test_rebinding_request_gets_a_json_rpc_403_from_the_proxy(everything, proxy_factory):
    proxy = proxy_factory(policy(everything))
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Host": "evil.example.com", "Origin": "http://evil.example.com", "accept": "application/json"}
    response = request("POST", proxy.url + "/mcp", body, headers)
    assert response.status == 403
    error = response.json()
    assert error["jsonrpc"] == "2.0" and error["id"] is None
    assert error["error"]["code"] == -32000 and "Host" in error["error"]["message"]
    cross_site = request("POST", proxy.url + "/mcp", body, {"Origin": "http://evil.example.com"})
    assert cross_site.status == 403 and "Origin" in cross_site.json()["error"]["message"]
    assert proxy.metric("agent_proxy_host_refusals_total", {"route": "mcp", "header": "origin"}) == 1


@pytest.mark.parametrize("kind", ["roots", "sampling", "elicitation"])
@pytest.mark.parametrize("on_get_stream", [True, False], ids=["get-stream", "post-sse-answer"])
def test_server_requests_reach_the_client_through_the_proxy(everything, proxy_factory, kind, on_get_stream):
    import anyio
    from mcp import ClientSession, types
    from mcp.client.streamable_http import streamable_http_client

    proxy = proxy_factory(policy(everything))
    asked: list[str] = []

    async def roots(context: object) -> types.ListRootsResult:
        asked.append("roots")
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    async def sampling(context: object, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append("sampling")
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="hi"), model="m")

    async def elicitation(context: object, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append("elicitation")
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def call() -> types.CallToolResult:
        async with (
            streamable_http_client(proxy.url + "/mcp") as (read, write),
            ClientSession(
                read, write, list_roots_callback=roots, sampling_callback=sampling, elicitation_callback=elicitation
            ) as session,
        ):
            await session.initialize()
            with anyio.fail_after(20):
                return await session.call_tool("test_client_request", {"kind": kind, "on_get_stream": on_get_stream})

    expected = {"roots": ["file:///work/project"], "sampling": "hi", "elicitation": {"name": "Ada"}}[kind]
    for _ in range(SESSIONS):
        result = anyio.run(call)
        assert not result.is_error, result
        text = result.content[0].text
        assert (text if kind == "sampling" else json.loads(text)) == expected
    assert asked == [kind] * SESSIONS

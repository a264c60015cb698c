"""What tool governance costs on an MCP route: the same tools/call direct, through the proxy without
the toolgov stage, and with it (allowlist, argument validation against the listed schema, metrics).

A real `mcp` SDK server (JSON answers, the 2026-07-28 flow: one self-contained POST per call)
and the proxy run in threads of this process; calls are sequential on one keep-alive
connection, so the figures are latencies, not throughput. Also times argument validation
alone. Run:
    python bench/tool_governance.py [--calls 500] [--rounds 3]
Figures are for this machine only; the servers and the load share this process and its CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import orjson

from proxy.tools.arguments import compile_schema, problem
from tests.fixtures.mcp_server import McpServerThread
from tests.fixtures.proxy_server import DEMO_KEY, DEMO_KEY_SHA256, ProxyServer

META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
}
HEADERS = {
    "authorization": f"Bearer {DEMO_KEY}",
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2026-07-28",
    "mcp-method": "tools/call",
    "mcp-name": "read_file",
}
LIST_HEADERS = HEADERS | {"mcp-method": "tools/list"}
LIST_HEADERS.pop("mcp-name")


def policy(url: str, toolgov: str) -> str:
    return f"""
version: 1
upstreams:
  files: {{url: "{url}", protocol: mcp}}
routes:
  - {{name: files, prefix: /mcp, upstream: files, tool: files}}
auth:
  static_keys: [{{caller: demo, id: demo-key, sha256: {DEMO_KEY_SHA256}}}]
callers:
  demo: {{tools: ["files:read_*"]}}
stages:
  toolgov: {toolgov}
"""


async def latencies(url: str, calls: int) -> list[float]:
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "read_file", "arguments": {"path": "/etc/hosts"}, "_meta": META},
        }
    )
    listing = orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": {"_meta": META}})
    out = []
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/mcp", data=listing, headers=LIST_HEADERS) as response:
            assert response.status == 200, await response.text()
            await response.read()
        for _ in range(calls):
            started = time.perf_counter()
            async with http.post(url + "/mcp", data=body, headers=HEADERS) as response:
                await response.read()
                assert response.status == 200
            out.append(time.perf_counter() - started)
    return out


def validation_figures() -> None:
    schema = {
        "type": "object",
        "properties": {"path": {"type": "string"}, "max_bytes": {"type": "integer", "minimum": 1}},
        "required": ["path"],
    }
    started = time.perf_counter()
    for n in range(200):  # distinct schemas: each is checked against its metaschema
        validator = compile_schema({**schema, "title": f"tool {n}"})
    compiled = (time.perf_counter() - started) / 200
    started = time.perf_counter()
    for _ in range(1000):  # the same schema again (another session listing the same tool)
        validator = compile_schema(schema)
    again = (time.perf_counter() - started) / 1000
    assert validator is not None
    started = time.perf_counter()
    for _ in range(10_000):
        problem(validator, {"path": "/etc/hosts", "max_bytes": 10}, "arguments")
    checked = (time.perf_counter() - started) / 10_000
    print(
        f"argument validation: compile {compiled * 1e6:.0f} us per new schema, {again * 1e6:.1f} us for one seen "
        f"before, check {checked * 1e6:.1f} us per call"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    validation_figures()
    with McpServerThread(json_response=True) as server:
        proxies = {
            "toolgov off": ProxyServer(policy(server.url, "{mode: 'off'}")),
            "toolgov on": ProxyServer(policy(server.url, "{}")),
        }
        for proxy in proxies.values():
            proxy.start()
        try:
            results: dict[str, list[float]] = {"direct": [], **{name: [] for name in proxies}}
            for _ in range(args.rounds):  # interleaved, so drift hits every mode alike
                results["direct"] += asyncio.run(latencies(server.url, args.calls))
                for name, proxy in proxies.items():
                    results[name] += asyncio.run(latencies(proxy.url, args.calls))
        finally:
            for proxy in proxies.values():
                proxy.stop()
    print(f"tools/call, {args.rounds} x {args.calls} sequential calls: latency in ms")
    print(f"{'mode':<14}{'p50':>8}{'p90':>8}{'p99':>8}")
    for name, values in results.items():
        cuts = statistics.quantiles(values, n=100)
        print(f"{name:<14}{cuts[49] * 1000:>8.2f}{cuts[89] * 1000:>8.2f}{cuts[98] * 1000:>8.2f}")


if __name__ == "__main__":
    main()

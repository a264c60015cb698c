"""What the proxy adds: latency (p50, p99), time to first byte and throughput, direct vs proxied.

Starts the built-in mock upstream and the proxy as separate processes (as deployed), then
drives both with an aiohttp load generator in this process over loopback keep-alive
connections. Run:  python bench/proxy_overhead.py [--requests 2000] [--concurrency 1 16 64]
Figures are for this machine only; the load generator shares its CPUs with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"
POLICY = """
version: 1
upstreams:
  mock: {{url: "http://127.0.0.1:{upstream_port}", protocol: openai,
          credentials: {{header: Authorization, value: "Bearer provider-key"}}}}
routes:
  - {{prefix: /v1/, upstream: mock}}
auth:
  static_keys:
    - {{caller: bench, sha256: {key_hash}}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def body(stream: bool, words: int) -> bytes:
    return orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "stream": stream,
            "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello " * 50}],
            "max_tokens": words,
        }
    )


async def one(session: aiohttp.ClientSession, url: str, payload: bytes, headers: dict[str, str]) -> tuple[float, float]:
    """(total seconds, seconds to the first body byte)."""
    start = time.perf_counter()
    first = None
    async with session.post(url, data=payload, headers=headers) as response:
        async for _ in response.content.iter_any():
            if first is None:
                first = time.perf_counter()
        if response.status != 200:
            raise RuntimeError(f"status {response.status}")
    end = time.perf_counter()
    return end - start, (first or end) - start


async def run_load(url: str, payload: bytes, headers: dict[str, str], concurrency: int, total: int) -> dict:
    connector = aiohttp.TCPConnector(limit=concurrency)
    latencies: list[float] = []
    ttfbs: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(min(50, total)):  # warm connections and code paths
            await one(session, url, payload, headers)
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                latency, ttfb = await one(session, url, payload, headers)
                latencies.append(latency)
                ttfbs.append(ttfb)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    ttfbs.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "ttfb50": statistics.median(ttfbs) * 1000,
    }


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--words", type=int, default=50, help="answer length (stream events)")
    parser.add_argument(
        "--ttfb-words", type=int, nargs="+", default=[10, 4000], help="stream lengths for the time-to-first-byte check"
    )
    args = parser.parse_args()

    import hashlib

    upstream_port, proxy_port = free_port(), free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as policy:
        policy.write(POLICY.format(upstream_port=upstream_port, key_hash=hashlib.sha256(KEY.encode()).hexdigest()))
    processes = [
        start(["mock-upstream", "--port", str(upstream_port)]),
        start(
            [
                "serve",
                "--policy",
                policy.name,
                "--port",
                str(proxy_port),
                "--host",
                "127.0.0.1",
                "--log-level",
                "warning",
            ]
        ),
    ]
    try:
        wait_ready(f"http://127.0.0.1:{upstream_port}/v1/models")
        wait_ready(f"http://127.0.0.1:{proxy_port}/readyz")
        headers = {"content-type": "application/json", "x-mock-reply-words": str(args.words)}
        targets = {
            "direct": (f"http://127.0.0.1:{upstream_port}/v1/chat/completions", headers),
            "proxy": (
                f"http://127.0.0.1:{proxy_port}/v1/chat/completions",
                {**headers, "authorization": f"Bearer {KEY}"},
            ),
        }
        print(
            f"{'mode':<10}{'conc':>5}{'path':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ttfb50':>9}"
            f"{'added p50':>11}{'added ttfb':>11}"
        )
        for stream in (False, True):
            for concurrency in args.concurrency:
                results = {}
                for name, (url, hdrs) in targets.items():
                    results[name] = asyncio.run(
                        run_load(url, body(stream, args.words), hdrs, concurrency, args.requests)
                    )
                for name, r in results.items():
                    added = r["p50"] - results["direct"]["p50"] if name == "proxy" else 0.0
                    added_ttfb = r["ttfb50"] - results["direct"]["ttfb50"] if name == "proxy" else 0.0
                    print(
                        f"{'stream' if stream else 'json':<10}{concurrency:>5}{name:>8}{r['rps']:>10.0f}"
                        f"{r['p50']:>9.2f}{r['p99']:>9.2f}{r['ttfb50']:>9.2f}"
                        + (f"{added:>11.3f}{added_ttfb:>11.3f}" if name == "proxy" else "")
                    )
        print("\ntime to first byte of a stream, 1 connection, by answer length (ms, p50)")
        for words in args.ttfb_words:
            row = {}
            for name, (url, hdrs) in targets.items():
                hdrs = {**hdrs, "x-mock-reply-words": str(words)}
                row[name] = asyncio.run(run_load(url, body(True, words), hdrs, 1, max(50, args.requests // 10)))
            print(
                f"  {words:>6} events: direct {row['direct']['ttfb50']:.2f}  proxy {row['proxy']['ttfb50']:.2f}"
                f"  added {row['proxy']['ttfb50'] - row['direct']['ttfb50']:.3f}"
            )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(10)
        os.unlink(policy.name)


if __name__ == "__main__":
    main()

"""What the proxy adds: latency (p50, p99), time to first byte and throughput, direct vs proxied.

Starts the built-in mock upstream, the proxy (default chain: auth and usage accounting) and,
for reference, `bare_forwarder.py` (the least a proxy of aiohttp's server and client does)
as separate processes, then drives all three with the same load, interleaved in rounds so
that drift in machine speed hits all alike, and counts each server's CPU time. Run:
  python bench/proxy_overhead.py [--requests 2000] [--concurrency 1 16 64]
Figures are for this machine only; the load generator shares its CPUs with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile

import orjson
from support import Samples, compare, free_port, start, stop, wait_ready

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
PACED_INTERVAL_MS = 1.0  # a model streaming 1000 tokens per second


def body(stream: bool, words: int) -> bytes:
    return orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "stream": stream,
            "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello " * 50}],
            "max_tokens": words,
        }
    )


def print_table(kind: str, concurrency: int, results: dict[str, Samples]) -> None:
    direct = results["direct"]
    for name, r in results.items():
        ttfb = r.p(0.5, ttfb=True)
        line = f"{kind:<8}{concurrency:>5}{name:>9}{r.rps:>9.0f}{r.cpu_us_per_request:>9.0f}"
        line += f"{r.p(0.5):>9.2f}{r.p(0.99):>9.2f}{ttfb:>9.2f}"
        if name != "direct":
            line += f"{r.p(0.5) - direct.p(0.5):>11.3f}{r.p(0.5, ttfb=True) - direct.p(0.5, ttfb=True):>11.3f}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="per target and row")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--words", type=int, default=50, help="answer length (stream events)")
    parser.add_argument(
        "--ttfb-words", type=int, nargs="+", default=[10, 1000], help="stream lengths for the TTFB rows"
    )
    parser.add_argument("--ttfb-requests", type=int, default=20)
    parser.add_argument("--log-level", default="info", help="the proxy's; info writes its JSON line per request")
    args = parser.parse_args()

    upstream_port, proxy_port, floor_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as policy:
        policy.write(POLICY.format(upstream_port=upstream_port, key_hash=hashlib.sha256(KEY.encode()).hexdigest()))
    processes = [
        start(["mock-upstream", "--port", str(upstream_port)]),
        start(
            [
                "serve",
                "--policy",
                policy.name,
                "--host",
                "127.0.0.1",
                "--port",
                str(proxy_port),
                "--log-level",
                args.log_level,
            ]
        ),
        start(["bench/bare_forwarder.py", upstream, str(floor_port)]),
    ]
    try:
        wait_ready(f"{upstream}/v1/models")
        wait_ready(f"http://127.0.0.1:{proxy_port}/readyz")
        wait_ready(f"http://127.0.0.1:{floor_port}/healthz")
        headers = {"content-type": "application/json", "x-mock-reply-words": str(args.words)}
        targets = {
            "direct": (f"{upstream}/v1/chat/completions", headers),
            "floor": (f"http://127.0.0.1:{floor_port}/v1/chat/completions", headers),
            "proxy": (
                f"http://127.0.0.1:{proxy_port}/v1/chat/completions",
                {**headers, "authorization": f"Bearer {KEY}"},
            ),
        }
        pids = {"direct": processes[0].pid, "proxy": processes[1].pid, "floor": processes[2].pid}
        print("floor = bare_forwarder.py, aiohttp's server and client and nothing else; added = versus direct")
        print("cpu us = CPU time per request of the serving process (the mock for direct)")
        print(
            f"{'mode':<8}{'conc':>5}{'target':>9}{'req/s':>9}{'cpu us':>9}{'p50 ms':>9}{'p99 ms':>9}{'ttfb50':>9}"
            f"{'added p50':>11}{'added ttfb':>11}"
        )
        for stream in (False, True):
            for concurrency in args.concurrency:
                results = asyncio.run(
                    compare(targets, body(stream, args.words), concurrency, args.requests, args.rounds, pids=pids)
                )
                print_table("stream" if stream else "json", concurrency, results)

        print("\ntime to first byte of a stream, 1 connection, by answer length (ms, p50; added versus direct)")
        for paced in (True, False):
            interval = str(PACED_INTERVAL_MS if paced else 0)
            label = f"paced {PACED_INTERVAL_MS:g} ms/event" if paced else "one burst"
            for words in args.ttfb_words:
                hdrs = {"x-mock-reply-words": str(words), "x-mock-event-interval-ms": interval}
                row = asyncio.run(
                    compare(
                        {name: (url, {**h, **hdrs}) for name, (url, h) in targets.items()},
                        body(True, words),
                        1,
                        max(args.ttfb_requests, 2000 // words),
                        rounds=2,
                        warmup=2,
                    )
                )
                direct = row["direct"].p(0.5, ttfb=True)
                print(
                    f"  {label:<20}{words:>6} events: direct {direct:.2f}"
                    + "".join(
                        f"  {name} {r.p(0.5, ttfb=True):.2f} (+{r.p(0.5, ttfb=True) - direct:.2f})"
                        for name, r in row.items()
                        if name != "direct"
                    )
                )
    finally:
        stop(processes)
        os.unlink(policy.name)


if __name__ == "__main__":
    main()

"""What grows in production must not grow the proxy's cost: callers, response size, open streams.

Starts a small upstream in this process and the proxy with the full chain (the policy of
bench/policies/full-chain.yaml, with 10,000 static keys, one caller each, limited and budgeted
per caller by `callers.default`), pinned to one CPU when there are two, then measures:

- callers: the proxy's CPU per request when the same requests come from 10 callers and from
  10,000 (round robin over their keys), interleaved over rounds;
- idle streams: the proxy's RSS before and with `--streams` streams open at once (each has
  had its first event and waits), so memory per open stream, then all of them finished;
- a large response under redaction: CPU and time per JSON answer of 0.1 and 1 MB of prose
  with an e-mail address, a phone number and a card number in every 200 characters;
- the response cache with `--cache-entries` entries: two routes with the cache stage on (memory
  store, one each), one filled through the proxy with 100,000 distinct answers and one nearly
  empty; then, rounds interleaved, the proxy's CPU per miss (a new question, stored) and per hit
  on each, and the RSS the entries take.

    python bench/scale.py [--requests 2000] [--rounds 3] [--streams 1000] [--cache-entries 100000] [--no-pin]

Room for what other stages add: `SCENARIOS` lists the measurements; truncation (a 200-message
conversation) adds one function there.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import support
from aiohttp import web

CALLERS = 10_000
PROSE = (
    "The rollout plan is ready; write to jane.doe@example.com or call +1 415 555 0100 with questions. "
    "The invoice was paid with card 4111 1111 1111 1111 last week, and the team agreed on the next steps. "
)
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-scale",
        "object": "chat.completion",
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
)


def key(index: int) -> str:
    return f"scale-key-{index:05d}"


CACHE_ROUTES = ("cache-small", "cache-full")  # one memory store each: their `max_entries` differ
CACHE_ENTRY_LIMIT = 1_000_000


def cache_routes() -> str:
    return "\n".join(
        f"  - {{name: {name}, prefix: /{name}/v1/, rewrite_prefix: /v1/, upstream: fake, stages: {{cache: "
        f"{{ttl_s: 86400, max_entries: {CACHE_ENTRY_LIMIT + i}, max_bytes: 4294967296}}}}}}"
        for i, name in enumerate(CACHE_ROUTES)
    )


def policy(upstream: str, ledger: Path) -> str:
    keys = "\n".join(
        f"    - {{caller: c{i:05d}, id: k{i:05d}, sha256: {hashlib.sha256(key(i).encode()).hexdigest()}}}"
        for i in range(CALLERS)
    )
    return f"""
version: 1
server:
  {{host: 127.0.0.1, port: 8100, max_connections: 4096, max_unauthenticated_connections: 4096,
   upstream_pool: {{connections_per_origin: 4096}}}}
ledger: {{path: "{ledger}", flush_interval_ms: 200}}
upstreams:
  fake: {{url: "{upstream}", protocol: openai, credentials: {{header: Authorization, value: "Bearer upstream-key"}}}}
routes:
  - {{name: openai, prefix: /v1/, upstream: fake}}
{cache_routes()}
auth:
  static_keys:
{keys}
callers:
  default:
    models: ["*"]
    rate_limit: {{requests_per_minute: 10000000, tokens_per_minute: 10000000000, concurrent: 10000}}
    budget: {{usd_per_day: 1000000}}
stages:
  input: {{max_chars: 200000, strip_control_chars: true, check_structure: true}}
  redaction: {{output: [email, phone, ssn, credit_card, iban, api_key, password], action: mask}}
  usage: {{stream_usage: true, estimate: true}}
pricing:
  fake-model: {{input: 0.15, output: 0.60}}
"""


class Upstream:
    """Answers at once; `big-N` models get N KB of prose; streams send one event, then wait for `release`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.streams_open = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model", ""))
        if body.get("stream"):
            return await self._stream(request)
        if model.startswith("big-"):
            size = int(model[4:]) * 1024
            text = (PROSE * (size // len(PROSE) + 1))[:size]
            answer = {
                "id": "chatcmpl-scale",
                "object": "chat.completion",
                "model": "fake-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": size // 4, "total_tokens": 12 + size // 4},
            }
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        return web.Response(body=ANSWER, content_type="application/json")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def event(payload: dict[str, object]) -> None:
            await response.write(b"data: " + orjson.dumps({"object": "chat.completion.chunk", **payload}) + b"\n\n")

        await event({"model": "fake-model", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]})
        self.streams_open += 1
        await self.release.wait()
        await event({"model": "fake-model", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        await event({"model": "fake-model", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 1}})
        await response.write(b"data: [DONE]\n\n")
        return response


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, object], api_key: str) -> None:
    headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
    async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {(await response.text())[:300]}")


async def worker(session: aiohttp.ClientSession, url: str, body: dict[str, object], keys: Iterator[str]) -> None:
    for api_key in keys:  # shared by the workers: each key is sent once
        await post(session, url, body, api_key)


async def callers(url: str, pid: int, args: argparse.Namespace, up: Upstream) -> list[str]:
    """CPU per request from 10 and from 10,000 callers, rounds interleaved."""
    body = {"model": "fake-model", "messages": MESSAGES}
    cpu: dict[int, list[float]] = {10: [], CALLERS: []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
        for i in range(200):  # warm-up
            await post(session, url, body, key(i % 10))
        for _ in range(args.rounds):
            for count in cpu:
                keys = iter([key(i % count) for i in range(args.requests)])
                before = support.cpu_seconds(pid)
                await asyncio.gather(*(worker(session, url, body, keys) for _ in range(16)))
                cpu[count].append((support.cpu_seconds(pid) - before) / args.requests * 1e6)
    small, large = (statistics.median(cpu[n]) for n in cpu)
    return [
        f"| CPU per request, 10 distinct callers | {small:.0f} us |",
        f"| CPU per request, 10,000 distinct callers | {large:.0f} us ({large / small:.2f}x) |",
    ]


async def large_response(url: str, pid: int, args: argparse.Namespace, up: Upstream) -> list[str]:
    """A JSON answer of 0.1 and 1 MB of prose with PII, redacted whole."""
    rows = []
    async with aiohttp.ClientSession() as session:
        for kb in (100, 1024):
            body = {"model": f"big-{kb}", "messages": MESSAGES}
            await post(session, url, body, key(0))
            times, cpus = [], []
            for _ in range(args.big_requests):
                before, started = support.cpu_seconds(pid), time.perf_counter()
                await post(session, url, body, key(0))
                times.append(time.perf_counter() - started)
                cpus.append(support.cpu_seconds(pid) - before)
            rows.append(
                f"| a {kb / 1024:.1f} MB answer under redaction: proxy CPU, then time to the last byte | "
                f"{statistics.median(cpus) * 1000:.0f} ms, {statistics.median(times) * 1000:.0f} ms |"
            )
    return rows


async def idle_streams(url: str, pid: int, args: argparse.Namespace, up: Upstream) -> list[str]:
    """RSS with `--streams` streams open at once, each past its first event."""
    body = orjson.dumps({"model": "fake-model", "messages": MESSAGES, "stream": True})
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = asyncio.Event()
        opened = 0

        async def one(index: int) -> None:
            nonlocal opened
            headers = {"authorization": f"Bearer {key(index % CALLERS)}", "content-type": "application/json"}
            async with session.post(url, data=body, headers=headers) as response:
                await response.content.readuntil(b"\n\n")  # the first event
                opened += 1
                if opened == args.streams:
                    started.set()
                await response.read()

        before, cpu_before = rss_mb(pid), support.cpu_seconds(pid)
        tasks = [asyncio.create_task(one(i)) for i in range(args.streams)]
        await asyncio.wait_for(started.wait(), 120)
        await asyncio.sleep(1)  # let the ledger writer and timers settle
        during, cpu_open = rss_mb(pid), support.cpu_seconds(pid) - cpu_before
        up.release.set()
        await asyncio.gather(*tasks)
        up.release.clear()
    await asyncio.sleep(1)
    after = rss_mb(pid)
    per_stream_kb = (during - before) * 1024 / args.streams
    return [
        f"| {args.streams} streams open at once: RSS before, open, after they end | "
        f"{before:.1f} / {during:.1f} / {after:.1f} MB |",
        f"| memory per open stream; CPU to open one | {per_stream_kb:.0f} KB; {cpu_open / args.streams * 1e6:.0f} us |",
    ]


def question(index: int) -> dict[str, object]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": f"Where is my order number {index}?"}]}


async def cached_round(session: aiohttp.ClientSession, url: str, pid: int, indices: list[int], expect: str) -> float:
    """The proxy's CPU per request over `indices` (16 at a time); every answer must say `x-cache: expect`."""
    pending = iter(indices)
    headers = {"authorization": f"Bearer {key(0)}", "content-type": "application/json"}

    async def worker() -> None:
        for index in pending:  # shared by the workers: each question is asked once
            async with session.post(url, data=orjson.dumps(question(index)), headers=headers) as response:
                await response.read()
                if response.status != 200 or response.headers.get("x-cache") != expect:
                    raise RuntimeError(f"{url}: {response.status}, x-cache {response.headers.get('x-cache')}")

    before = support.cpu_seconds(pid)
    await asyncio.gather(*(worker() for _ in range(16)))
    return (support.cpu_seconds(pid) - before) / len(indices) * 1e6


async def cache_entries(url: str, pid: int, args: argparse.Namespace, up: Upstream) -> list[str]:
    """CPU per miss and per hit with a nearly empty cache and with `--cache-entries` entries, rounds interleaved."""
    small, full = (url.replace("/v1/", f"/{name}/v1/", 1) for name in CACHE_ROUTES)
    entries, count = args.cache_entries, args.requests
    fresh = iter(range(10 * entries, 20 * entries))  # questions neither cache has seen
    cpu: dict[tuple[str, str], list[float]] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
        seeded = list(range(count))
        await cached_round(session, small, pid, seeded, "MISS")
        before = rss_mb(pid)
        started = time.perf_counter()
        await cached_round(session, full, pid, list(range(entries)), "MISS")
        fill_s, after = time.perf_counter() - started, rss_mb(pid)
        spread = [(n * 7919) % entries for n in range(count)]  # hits all over the full cache
        for _ in range(args.rounds):
            for name, target, hits in (("small", small, seeded), ("full", full, spread)):
                misses = [next(fresh) for _ in range(count)]
                cpu.setdefault((name, "miss"), []).append(await cached_round(session, target, pid, misses, "MISS"))
                cpu.setdefault((name, "hit"), []).append(await cached_round(session, target, pid, hits, "HIT"))
    small_n = count * (args.rounds + 1)
    row = {k: statistics.median(v) for k, v in cpu.items()}
    miss, hit = (row["full", kind] / row["small", kind] for kind in ("miss", "hit"))
    return [
        f"| cache, {entries:,} entries stored through the proxy: RSS before / after; per entry; time to fill | "
        f"{before:.1f} / {after:.1f} MB; {(after - before) * 1024 * 1024 / entries:.0f} B; {fill_s:.0f} s |",
        f"| CPU per cache miss (stored), up to {small_n:,} entries / {entries:,} entries | "
        f"{row['small', 'miss']:.0f} / {row['full', 'miss']:.0f} us ({miss:.2f}x) |",
        f"| CPU per cache hit, up to {small_n:,} entries / {entries:,} entries | "
        f"{row['small', 'hit']:.0f} / {row['full', 'hit']:.0f} us ({hit:.2f}x) |",
    ]


Scenario = Callable[[str, int, argparse.Namespace, Upstream], Awaitable[list[str]]]
SCENARIOS: tuple[Scenario, ...] = (callers, idle_streams, large_response, cache_entries)


async def run(args: argparse.Namespace, up: Upstream, up_port: int, port: int, pid: int) -> list[str]:
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/v1/chat/completions", up.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", up_port, backlog=4096).start()
        await asyncio.to_thread(support.wait_ready, f"http://127.0.0.1:{port}/readyz", 60)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        rows = ["| scale | figure |", "|---|---|"]
        for scenario in SCENARIOS:
            if args.only is None or scenario.__name__ in args.only:
                rows += await scenario(url, pid, args, up)
        rows.append(f"| proxy peak RSS over the run | {peak_mb(pid):.1f} MB |")
        return rows
    finally:
        await runner.cleanup()


def main(args: argparse.Namespace) -> None:
    up_port, port = support.free_port(), support.free_port()
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "scale.yaml"
        path.write_text(policy(f"http://127.0.0.1:{up_port}", Path(work) / "ledger.sqlite3"))
        argv = [sys.executable, "-m", "proxy", "serve", "--policy", str(path), "--port", str(port)]
        argv += ["--log-level", "warning"]
        if not args.no_pin and (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(0, {0})  # this script and its upstream on CPU 0, the proxy on CPU 1
            argv = ["taskset", "-c", "1", *argv]
        proxy = subprocess.Popen(argv, cwd=support.ROOT, env={**os.environ, "PYTHONPATH": str(support.ROOT)})
        try:
            rows = asyncio.run(run(args, Upstream(), up_port, port, proxy.pid))
        finally:
            support.stop([proxy])
    print("\n".join(rows))


def peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="per round and caller count (default: 2000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-requests", type=int, default=5, help="timed large answers per size (default: 5)")
    parser.add_argument("--streams", type=int, default=1000, help="streams open at once (default: 1000)")
    parser.add_argument(
        "--cache-entries", type=int, default=100_000, help="entries in the full cache (default: 100000)"
    )
    parser.add_argument("--only", nargs="+", choices=[s.__name__ for s in SCENARIOS], help="run these scenarios only")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the proxy and this script to CPUs")
    main(parser.parse_args())

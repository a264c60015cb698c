"""What admission costs per request: the in-memory store versus Redis, alone and through the proxy.

1. The limiter alone: one request's full admission (requests, tokens, concurrency, a day's
   and a month's budget: five checks in one store call) plus its correction after the
   response (one more call), one at a time and with many requests at once.
2. Through the proxy: the same limits on a real `agent-proxy serve` process in front of the
   mock upstream, no limits vs memory vs Redis, as added latency per request.
3. Redis calls (INFO commandstats: round trips, and the commands the scripts run inside Redis)
   per request and per stream through one proxy process with
   every limit on: sequential requests, then streams of `--stream-s` seconds one at a time and
   ten at once (lease renewals are one call per process per `lease_s / 4`, shared by every
   stream). `--proxy-root DIR` runs the proxy of another checkout, to compare before and after.

Starts its own redis-server (it must be installed) on a free loopback port. Run:
    python bench/ratelimit.py [--requests 3000] [--concurrency 1 16] [--rounds 3]
    python bench/ratelimit.py --calls-only [--proxy-root /path/to/checkout] [--stream-s 12]
Each figure is the best of `--rounds` runs, the setups taking turns, so a noisy neighbour
skews one run rather than one setup. Figures are for this machine only; the load
generator shares its CPUs with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import orjson
from support import ROOT, compare, free_port, start, stop, wait_ready

sys.path.insert(0, str(ROOT))

from proxy.limits.limiter import Limit, Limiter, LimitPlan
from proxy.state import MemoryStore, Quota, Rate, Slot, Store
from proxy.state.base import Plan
from proxy.state.redis import RedisStore

KEY = "bench-key"
BIG = "{requests_per_minute: 10000000, tokens_per_minute: 10000000000, concurrent: 100000}"
POLICY = """
version: 1
{state}
upstreams:
  mock: {{url: "http://127.0.0.1:{upstream_port}", protocol: openai,
          credentials: {{header: Authorization, value: "Bearer provider-key"}}}}
routes:
  - {{prefix: /v1/, upstream: mock}}
auth:
  static_keys:
    - {{caller: bench, sha256: {key_hash}}}
callers:
  default: {{}}
  bench: {limits}
"""


# ---- 1. the limiter alone


def compiled(prefix: str) -> tuple[LimitPlan, Plan]:
    """A caller's admission and settlement as the rate-limit stage compiles them once (proxy/limits/admission.py)."""
    now = time.time()
    key = f"{prefix}c:bench"
    limits, _ = LimitPlan.of(
        [
            Limit(Rate(f"{key}:rpm", 10_000_000, 60, 1), "requests", "", "requests"),
            Limit(Rate(f"{key}:tpm", 10**10, 60, 1500), "tokens", "", "tokens"),
            Limit(Slot(f"{key}:conc", 100_000, "", 660), "concurrent", ""),
            Limit(Quota(f"{key}:usd:d", 1e9, 0.002, now + 86_400), "budget_day", ""),
            Limit(Quota(f"{key}:usd:m", 1e9, 0.002, now + 86_400 * 31), "budget_month", ""),
        ]
    )
    rows = limits.plan.rows
    return limits, Plan([rows[2], rows[1], rows[3], rows[4]])  # release, then the corrections


async def limiter_bench(store: Store, total: int, concurrency: int) -> dict[str, float]:
    """One request's admission (five checks) and settlement (a release, three corrections), as the stage makes
    them: compiled once, with this request's amounts."""
    limiter = Limiter(lambda: store, fail_closed=True)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    limits, settlement = compiled(prefix)
    latencies: list[float] = []
    remaining = total

    async def one(once_key: str) -> bool:
        lease = uuid.uuid4().hex
        decision = await limiter.admit_plan(limits, (1, 1500, lease, 0.002, 0.002), 0.0, once_key)
        await limiter.settle_plan(settlement, (lease, -1200, -0.001, -0.001), once_key)
        return decision.admitted

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            admitted = await one(f"{prefix}once:{remaining}")
            latencies.append(time.perf_counter() - start)
            assert admitted

    for _ in range(200):  # warm up: script load, connections
        await one(f"{prefix}once:warm")
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "per_s": total / elapsed,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99) - 1] * 1e6,
    }


# ---- 2. through the proxy


async def proxy_load(url: str, concurrency: int, total: int) -> float:
    """p50 latency in ms of a plain chat completion."""
    payload = orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}", "x-mock-reply-words": "20"}
    results = await compare({"proxy": (url, headers)}, payload, concurrency, total, rounds=1, warmup=100)
    return results["proxy"].p(0.5)


# ---- 3. Redis calls per request and per stream


def redis_calls(redis_url: str) -> dict[str, int]:
    import redis

    stats = redis.Redis.from_url(redis_url).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def reset_stats(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).config_resetstat()


async def chats(url: str, count: int, concurrency: int, stream_s: float) -> None:
    """`count` chat completions, `concurrency` at a time; streamed over `stream_s` seconds when it is > 0."""
    import aiohttp

    body: dict[str, object] = {
        "model": "gpt-4o-mini",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"authorization": f"Bearer {KEY}", "x-mock-reply-words": "20"}
    if stream_s > 0:
        body["stream"] = True
        headers["x-mock-event-interval-ms"] = str(stream_s * 1000 / 20)
    payload = orjson.dumps(body)
    left = count

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(url, data=payload, headers={**headers, "content-type": "application/json"}) as r:
                assert r.status == 200, r.status
                await r.read()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


def calls_bench(redis_url: str, upstream_port: int, root: str, requests: int, stream_s: float) -> None:
    key_hash = hashlib.sha256(KEY.encode()).hexdigest()
    limits = f"{{rate_limit: {BIG}, budget: {{usd_per_day: 1000000, usd_per_month: 10000000}}}}"
    state = f"state: {{backend: redis, redis_url: '{redis_url}'}}"
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as policy:
        policy.write(POLICY.format(state=state, upstream_port=upstream_port, key_hash=key_hash, limits=limits))
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--policy",
            policy.name,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz")
        asyncio.run(chats(url, 5, 1, 0))  # warm up: connections, script load
        print(f"3. Redis calls through the proxy of {root} (all limits on; streams of {stream_s:g} s)")
        print(f"{'what':<28}{'n':>5}{'trips':>7}{'per one':>9}{'in Redis':>10}{'per one':>9}  by command")
        for label, count, concurrency, seconds in (
            ("requests, one at a time", requests, 1, 0.0),
            ("streams, one at a time", 3, 1, stream_s),
            ("streams, ten at once", 10, 10, stream_s),
        ):
            reset_stats(redis_url)
            asyncio.run(chats(url, count, concurrency, seconds))
            time.sleep(0.2)  # the last settlement runs just after its response
            calls = redis_calls(redis_url)
            for name in ("config|resetstat", "info", "hello", "client|setinfo"):
                calls.pop(name, None)
            trips = sum(n for name, n in calls.items() if name.startswith(("eval", "script", "ping")))
            inside = sum(calls.values()) - trips  # commands the scripts ran
            detail = ", ".join(f"{name} {n}" for name, n in sorted(calls.items()))
            print(f"{label:<28}{count:>5}{trips:>7}{trips / count:>9.2f}{inside:>10}{inside / count:>9.2f}  {detail}")
    finally:
        stop([proxy])
        os.unlink(policy.name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls-only", action="store_true", help="only part 3: Redis calls per request and stream")
    parser.add_argument("--proxy-root", default=str(ROOT), help="the checkout whose proxy part 3 runs")
    parser.add_argument("--stream-s", type=float, default=12.0)
    args = parser.parse_args()
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("redis-server is not installed")
    redis_port, upstream_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    processes = [
        subprocess.Popen(
            [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        ),
        start(["mock-upstream", "--port", str(upstream_port)]),
    ]
    policies: list[str] = []
    try:
        wait_ready(f"http://127.0.0.1:{upstream_port}/v1/models")
        if args.calls_only:
            calls_bench(redis_url, upstream_port, args.proxy_root, min(args.requests, 200), args.stream_s)
            return
        print("1. the limiter alone: admission (5 checks) + correction (4 changes), per request")
        print(f"{'store':<8}{'conc':>6}{'req/s':>10}{'p50 us':>10}{'p99 us':>10}")
        best: dict[tuple[str, int], dict[str, float]] = {}
        for _ in range(args.rounds):
            for name in ("memory", "redis"):
                for concurrency in (1, 32):

                    async def run(name: str = name, concurrency: int = concurrency) -> dict[str, float]:
                        store: Store = MemoryStore() if name == "memory" else RedisStore(redis_url, 1.0)
                        try:
                            return await limiter_bench(store, args.requests, concurrency)
                        finally:
                            await store.close()

                    r = asyncio.run(run())
                    if (name, concurrency) not in best or r["p50_us"] < best[(name, concurrency)]["p50_us"]:
                        best[(name, concurrency)] = r
        for (name, concurrency), r in best.items():
            print(f"{name:<8}{concurrency:>6}{r['per_s']:>10.0f}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}")

        print("\n2. through the proxy: p50 ms of a chat completion, and what the limits add")
        key_hash = hashlib.sha256(KEY.encode()).hexdigest()
        setups = {
            "none": ("", "{}"),
            "memory": ("", f"{{rate_limit: {BIG}, budget: {{usd_per_day: 1000000}}}}"),
            "redis": (
                f"state: {{backend: redis, redis_url: '{redis_url}'}}",
                f"{{rate_limit: {BIG}, budget: {{usd_per_day: 1000000}}}}",
            ),
        }
        results: dict[tuple[str, int], float] = {}
        for _ in range(args.rounds):
            for name, (state, limits) in setups.items():
                port = free_port()
                with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as policy:
                    policy.write(
                        POLICY.format(state=state, upstream_port=upstream_port, key_hash=key_hash, limits=limits)
                    )
                policies.append(policy.name)
                proxy = start(["serve", "--policy", policy.name, "--port", str(port), "--log-level", "warning"])
                try:
                    wait_ready(f"http://127.0.0.1:{port}/readyz")
                    for concurrency in args.concurrency:
                        url = f"http://127.0.0.1:{port}/v1/chat/completions"
                        p50 = asyncio.run(proxy_load(url, concurrency, args.requests))
                        results[(name, concurrency)] = min(p50, results.get((name, concurrency), p50))
                finally:
                    stop([proxy])
        print(f"{'limits':<8}{'conc':>6}{'p50 ms':>10}{'added':>10}")
        for (name, concurrency), p50 in results.items():
            added = p50 - results[("none", concurrency)]
            print(f"{name:<8}{concurrency:>6}{p50:>10.3f}{added:>10.3f}")
    finally:
        stop(processes)
        for name in policies:
            os.unlink(name)


if __name__ == "__main__":
    main()

"""What a cache lookup costs with 100,000 entries stored: the in-memory store versus Redis.

One lookup is what the cache stage does per request before it can answer: the key over the
canonical request (sorted-key JSON and sha256), the store's get, and decoding the entry. It
is timed for hits and misses against a store already holding `--entries` entries of about
`--entry-bytes` bytes each, one lookup at a time (the latency a request sees; Redis is one
round trip over loopback). Starts its own redis-server (it must be installed). Run:
    python bench/cache.py [--entries 100000] [--entry-bytes 600] [--lookups 20000] [--rounds 3]
Each figure is the best of `--rounds` runs. Figures are for this machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import time

from support import ROOT, free_port

sys.path.insert(0, str(ROOT))

from proxy.cache.entry import Entry
from proxy.cache.keys import exact_key
from proxy.cache.redis_store import NAMESPACE, RedisCacheStore
from proxy.cache.store import CacheStore, MemoryCacheStore
from proxy.protocols import PROTOCOLS

PREFIX = "bench:"
OPENAI = PROTOCOLS["openai"]


def request(i: int) -> dict:
    system = "You are a support agent for an online shop. Answer briefly and politely."
    question = f"Where is my order number {i}?"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return {"model": "gpt-4o-mini", "temperature": 0, "messages": messages}


def key_of(i: int) -> str:
    return exact_key("caller:bench", "openai", ("/v1/chat/completions", "", []), OPENAI.cache_fields(request(i)))


def entry_bytes(i: int, size: int) -> bytes:
    text = ("Your order is on its way and should arrive within two working days. " * 40)[:size]
    body = {"id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 120, "total_tokens": 160}}  # fmt: skip
    return Entry(body, "gpt-4o-mini", {"input_tokens": 40, "output_tokens": 120}, "caller:bench", 4e9).encode()


async def fill_memory(store: MemoryCacheStore, entries: int, size: int) -> None:
    for i in range(entries):
        await store.put(key_of(i), entry_bytes(i, size), 4e9)


async def fill_redis(url: str, entries: int, size: int) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    for start in range(0, entries, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(entries, start + 1000)):
            pipe.set(f"{PREFIX}{NAMESPACE}{key_of(i)}", entry_bytes(i, size), ex=3600)
        await pipe.execute()
    await client.aclose()


async def lookups(store: CacheStore, entries: int, count: int, hit: bool) -> list[float]:
    times = []
    for n in range(count):
        i = (n * 7919) % entries if hit else entries + n
        started = time.perf_counter()
        raw = await store.get(key_of(i))
        entry = Entry.decode(raw) if raw is not None else None
        times.append(time.perf_counter() - started)
        assert (entry is not None) == hit
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
    return f"p50 {p50 * 1e6:7.1f} us   p99 {p99 * 1e6:7.1f} us   mean {statistics.fmean(times) * 1e6:7.1f} us"


async def measure(args: argparse.Namespace, redis_url: str | None) -> None:
    per_key = []
    for i in range(5000):
        t = time.perf_counter()
        key_of(i)
        per_key.append(time.perf_counter() - t)
    print(f"key over the canonical request alone:            {summary(per_key)}")

    started = time.perf_counter()
    memory = MemoryCacheStore(args.entries, 64 * 1024**3)
    await fill_memory(memory, args.entries, args.entry_bytes)
    filled = time.perf_counter() - started
    print(f"memory: {memory.entries} entries, {memory.bytes / 1e6:.1f} MB counted (filled in {filled:.1f} s)")
    for hit in (True, False):
        runs = [await lookups(memory, args.entries, args.lookups, hit) for _ in range(args.rounds)]
        best = min(runs, key=statistics.median)
        print(f"memory {'hit ' if hit else 'miss'} (key + get + decode):           {summary(best)}")
    if redis_url is None:
        print("redis-server is not installed: Redis figures skipped")
        return
    await fill_redis(redis_url, args.entries, args.entry_bytes)
    store = RedisCacheStore(redis_url, 0.25, PREFIX)
    for hit in (True, False):
        runs = [await lookups(store, args.entries, args.lookups, hit) for _ in range(args.rounds)]
        best = min(runs, key=statistics.median)
        print(f"redis  {'hit ' if hit else 'miss'} (key + GET round trip + decode): {summary(best)}")
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--entry-bytes", type=int, default=600)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = shutil.which("redis-server")
    if server is None:
        asyncio.run(measure(args, None))
        return
    port = free_port()
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_answers(port)
        asyncio.run(measure(args, f"redis://127.0.0.1:{port}/0"))
    finally:
        redis.terminate()
        redis.wait(10)


def wait_answers(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


if __name__ == "__main__":
    main()

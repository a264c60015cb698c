"""Memory per request is bounded by the body size times a small factor, and given back after a burst.

The proxy runs as its own process (`agent-proxy serve`), so its RSS is its own; a burst of large
prompts goes through it at once. The figures themselves: python bench/caller_memory.py.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.fixtures.fake_upstream import FakeUpstream
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy, serve_process
from tests.fixtures.servers import free_port
from tests.fixtures.waiting import proxy_ready, wait_for

PARALLEL = 10
ROUNDS = 3
PROMPT_BYTES = 9 * 1024 * 1024
FACTOR = 5  # docs/forwarding.md: about 3x a body at the peak of its request
SETTLED_MB = 32


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def burst(url: str, body: bytes) -> list[int]:
    headers = {"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def one() -> int:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one() for _ in range(PARALLEL)))


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads RSS from /proc")
def test_a_burst_of_large_prompts_is_bounded_and_given_back(tmp_path):
    with FakeUpstream() as upstream:
        policy = tmp_path / "policy.yaml"
        # Ten 9 MB prompts read at once by the test upstream: on a loaded machine that can outlast 5 s.
        timeouts = "first_byte_s: 5, idle_s: 5, total_s: 30"
        policy.write_text(basic_policy(upstream.url).replace(timeouts, "first_byte_s: 60, idle_s: 60, total_s: 120"))
        port = free_port()
        process = serve_process(policy, port)
        try:
            wait_for(lambda: proxy_ready(port) or process.poll() is not None, timeout=20)
            before = rss_mb(process.pid)
            peak = [before]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.005):
                    peak[0] = max(peak[0], rss_mb(process.pid))

            sampler = threading.Thread(target=sample)
            sampler.start()
            prompt = "word " * (PROMPT_BYTES // 5)
            body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
            try:
                for _ in range(ROUNDS):  # glibc keeps a burst's memory only some of the time: each round must settle
                    statuses = asyncio.run(burst(f"http://127.0.0.1:{port}/v1/chat/completions", body))
                    assert statuses == [200] * PARALLEL
                    wait_for(lambda: rss_mb(process.pid) < before + SETTLED_MB, timeout=10)
            finally:
                done.set()
                sampler.join()
            assert peak[0] - before < PARALLEL * FACTOR * len(body) / 2**20
        finally:
            process.kill()
            process.wait(10)

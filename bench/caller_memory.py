"""What a burst of large prompts costs the proxy in memory, and whether it is given back.

Starts the mock upstream and the proxy as separate processes (the proxy's default chain:
auth and usage accounting), sends `--parallel` chat completions of `--prompt-mb` MB each at
once, `--rounds` times, and samples the proxy's RSS from /proc: before, at its peak during
the bursts, and after they settle. Run:  python bench/caller_memory.py [--parallel 10 --prompt-mb 9]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
import support

KEY = "bench-key-1"
POLICY = """
version: 1
server: {{max_body_bytes: {max_body}}}
upstreams:
  mock: {{url: "http://127.0.0.1:{mock_port}", protocol: openai}}
routes:
  - {{prefix: /v1/, upstream: mock}}
auth:
  static_keys: [{{caller: bench, id: bench-1, sha256: {sha}}}]
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def burst(url: str, parallel: int, body: bytes) -> list[int]:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:

        async def one() -> int:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one() for _ in range(parallel)))


async def sample_peak(pid: int, stop: asyncio.Event, peak: list[float]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb(pid))
        await asyncio.sleep(0.01)


async def measure(url: str, pid: int, parallel: int, body: bytes, rounds: int) -> tuple[float, list[float]]:
    peak = [rss_mb(pid)]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_peak(pid, stop, peak))
    after = []
    for _ in range(rounds):
        statuses = await burst(url, parallel, body)
        assert statuses == [200] * parallel, statuses
        await asyncio.sleep(2)  # let completion work (usage, the log line) finish and the allocator settle
        after.append(rss_mb(pid))
    stop.set()
    await sampler
    return peak[0], after


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--prompt-mb", type=float, default=9)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    mock_port, proxy_port = support.free_port(), support.free_port()
    prompt = "word " * int(args.prompt_mb * 1024 * 1024 / 5)
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(
            POLICY.format(max_body=10 * 1024 * 1024, mock_port=mock_port, sha=hashlib.sha256(KEY.encode()).hexdigest())
        )
        mock = support.start(["mock-upstream", "--port", str(mock_port)])
        proxy = support.start(["serve", "--policy", str(policy), "--port", str(proxy_port)])
        try:
            support.wait_ready(f"http://127.0.0.1:{mock_port}/v1/models")
            support.wait_ready(f"http://127.0.0.1:{proxy_port}/readyz")
            time.sleep(1)
            before = rss_mb(proxy.pid)
            url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
            peak, after = asyncio.run(measure(url, proxy.pid, args.parallel, body, args.rounds))
        finally:
            support.stop([proxy, mock])
    per_request = (peak - before) / args.parallel
    print(f"{args.parallel} parallel prompts of {len(body) / 1048576:.1f} MB, {args.rounds} rounds")
    print(
        f"proxy RSS before {before:.0f} MB, peak {peak:.0f} MB, after each round (2 s settle) "
        + ", ".join(f"{a:.0f}" for a in after)
        + " MB"
    )
    print(f"peak growth per request {per_request:.1f} MB = {per_request * 1048576 / len(body):.1f}x the body")


if __name__ == "__main__":
    main()

"""Time to first byte at one connection, and why a stream's is longer than a JSON request's latency.

`bench/compare` times a stream's first byte right after the previous stream ended: 24 events
5 ms apart, so the target spent the last 120 ms mostly idle. wrk's JSON latency comes from
requests sent back to back. This script measures both on one connection, plus JSON requests
each sent after a pause (`--pause-ms`), for the upstream alone and for one or more agent-proxy
checkouts (this one, and `--baseline DIR` for before/after), interleaved over rounds, with the
target's CPU time per request from /proc. A request that follows an idle spell costs the same
code more CPU time (caches, branch predictors and the vCPU's state are cold), so the pause
column is the one that tells the stream's first byte apart from the stream path's own work.

    python bench/first_byte.py [--policy bench/policies/auth-only.yaml] [--baseline DIR]
        [--rounds 5] [--requests 200] [--pause-ms 100]

The upstream and this client are pinned to CPU 0, each proxy to CPU 1 (as `bench/compare` does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
from support import ROOT, free_port, one, stop, wait_ready

MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]  # bench/compare's
JSON_BODY = orjson.dumps({"model": "fake-model", "messages": MESSAGES})
STREAM_BODY = orjson.dumps({"model": "fake-model", "messages": MESSAGES, "stream": True})
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-key-0001"}
MODES = ("stream", "json", "pause")
LABELS = {
    "stream": "stream first byte, after a stream",
    "json": "JSON, back to back",
    "pause": "JSON, after a pause",
}


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid` so far, in nanoseconds resolution (schedstat), not clock ticks."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total / 1e9


async def timed(url: str, mode: str, requests: int, pause_s: float, pid: int | None) -> tuple[float, float]:
    """(median milliseconds, the target's CPU microseconds per request) over `requests` on one connection."""
    body = STREAM_BODY if mode == "stream" else JSON_BODY
    found: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for _ in range(3):  # the connection, both hops of it, warmed up
            await one(session, url, body, HEADERS)
        before = cpu_seconds(pid) if pid else 0.0
        for _ in range(requests):
            if mode == "pause":
                await asyncio.sleep(pause_s)
            total, first = await one(session, url, body, HEADERS)
            found.append(first if mode == "stream" else total)
        cpu = (cpu_seconds(pid) - before) / requests * 1e6 if pid else float("nan")
    return statistics.median(found) * 1000, cpu


def start_proxy(checkout: Path, policy: Path, port: int, upstream: str, cpus: str | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "proxy", "serve", "--policy", str(policy), "--port", str(port)]
    argv += ["--log-level", "warning"]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "BENCH_UPSTREAM_URL": upstream,
        "BENCH_LEDGER": str(Path(os.environ.get("TMPDIR", "/tmp")) / f"first-byte-{port}.sqlite3"),
        "NO_PROXY": "127.0.0.1",
    }
    return subprocess.Popen(argv, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=ROOT / "bench" / "policies" / "auth-only.yaml")
    parser.add_argument("--baseline", type=Path, action="append", default=[], help="another checkout to compare")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="per mode, target and round (default 200)")
    parser.add_argument("--pause-ms", type=float, default=100.0, help="before each request of the pause mode")
    args = parser.parse_args()
    pinned = (os.cpu_count() or 1) >= 2
    client_cpu, target_cpu = ("0", "1") if pinned else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {int(client_cpu)})
    upstream_port = free_port()
    command = [sys.executable, str(ROOT / "bench" / "fast_upstream.py"), "--port", str(upstream_port)]
    processes = [subprocess.Popen(["taskset", "-c", client_cpu, *command] if client_cpu else command)]
    upstream = f"http://127.0.0.1:{upstream_port}"
    targets: list[tuple[str, str, int | None]] = [("upstream alone (direct)", upstream, processes[0].pid)]
    wait_ready(f"{upstream}/")  # it answers any request with a chat completion
    checkouts = [("this checkout", ROOT)] + [(f"baseline {path}", path.resolve()) for path in args.baseline]
    try:
        for label, checkout in checkouts:
            port = free_port()
            process = start_proxy(checkout, args.policy.resolve(), port, upstream, target_cpu)
            processes.append(process)
            wait_ready(f"http://127.0.0.1:{port}/readyz")
            targets.append((label, f"http://127.0.0.1:{port}/v1/chat/completions", process.pid))
        targets[0] = (targets[0][0], f"{upstream}/v1/chat/completions", targets[0][2])
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for round_ in range(args.rounds):
            order = targets if round_ % 2 == 0 else targets[:1] + targets[:0:-1]  # alternate the proxies' order
            for mode in MODES:
                for label, url, pid in order:
                    figures = asyncio.run(timed(url, mode, args.requests, args.pause_ms / 1000, pid))
                    results.setdefault((label, mode), []).append(figures)
        report(targets, results, args)
    finally:
        stop(processes)


def report(
    targets: list[tuple[str, str, int | None]],
    results: dict[tuple[str, str], list[tuple[float, float]]],
    args: argparse.Namespace,
) -> None:
    direct = targets[0][0]
    print(
        f"\n{args.rounds} rounds x {args.requests} requests per mode, one connection; policy {args.policy.name}; "
        f"pause {args.pause_ms:g} ms; medians over rounds of each round's median (added: minus direct, same round)\n"
    )
    columns = [LABELS[mode] for mode in MODES] + ["CPU per JSON request: back to back, after a pause"]
    print("| target | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * (len(MODES) + 1))
    for label, _, _ in targets:
        cells = []
        for mode in MODES:
            ms = statistics.median(f[0] for f in results[(label, mode)])
            if label == direct:
                cells.append(f"{ms:.3f} ms")
            else:
                added = statistics.median(
                    f[0] - d[0] for f, d in zip(results[(label, mode)], results[(direct, mode)], strict=True)
                )
                cells.append(f"{ms:.3f} ms (+{added:.3f})")
        cpu = [statistics.median(f[1] for f in results[(label, mode)]) for mode in ("json", "pause")]
        cells.append(f"{cpu[0]:.0f} us, {cpu[1]:.0f} us")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

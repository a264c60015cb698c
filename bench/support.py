"""What the benchmarks share: ports, processes, and a keep-alive HTTP load generator.

Each bench script imports this as `support` (scripts run as `python bench/NAME.py`, so this
directory is on the path). Servers run as separate processes, as deployed; the load generator
runs in the bench's own process over loopback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]


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


def start(
    args: list[str], env: dict[str, str] | None = None, stderr: Any = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """`python -m proxy ARGS` (or `python FILE ARGS` when args[0] ends in .py); output discarded unless
    `stderr` (a file) is given for the log lines."""
    command = [sys.executable, *args] if args[0].endswith(".py") else [sys.executable, "-m", "proxy", *args]
    return subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=stderr
    )


def stop(processes: Iterable[subprocess.Popen[bytes]], timeout: float = 15) -> None:
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Samples:
    """Latencies and times to first body byte, in seconds, pooled over rounds; the server's CPU time."""

    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    cpu_s: float = 0.0  # used by the process serving the target, while it did

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / len(self.latencies) * 1e6 if self.latencies else 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def p(self, q: float, ttfb: bool = False) -> float:
        """The q-quantile in milliseconds."""
        values = sorted(self.ttfbs if ttfb else self.latencies)
        if q == 0.5:
            return statistics.median(values) * 1000
        return values[max(0, int(len(values) * q) - 1)] * 1000


async def one(session: aiohttp.ClientSession, url: str, payload: bytes, headers: dict[str, str]) -> tuple[float, float]:
    """(total seconds, seconds to the first body byte) of one POST, body read to the end."""
    start_at = time.perf_counter()
    first = None
    async with session.post(url, data=payload, headers=headers) as response:
        async for _ in response.content.iter_any():
            if first is None:
                first = time.perf_counter()
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
    end = time.perf_counter()
    return end - start_at, (first or end) - start_at


async def load(
    session: aiohttp.ClientSession,
    url: str,
    payload: bytes,
    headers: dict[str, str],
    concurrency: int,
    total: int,
    into: Samples,
) -> None:
    """`total` requests over `concurrency` keep-alive connections, added to `into`."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            latency, ttfb = await one(session, url, payload, headers)
            into.latencies.append(latency)
            into.ttfbs.append(ttfb)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    into.elapsed += time.perf_counter() - started


async def compare(
    targets: dict[str, tuple[str, dict[str, str]]],
    payload: bytes,
    concurrency: int,
    total: int,
    rounds: int = 5,
    warmup: int = 50,
    pids: dict[str, int] | None = None,
) -> dict[str, Samples]:
    """The same load on each target, interleaved in rounds so that drift in machine speed hits all alike.

    `pids` names the process serving each target, whose CPU time is then counted.
    """
    results = {name: Samples() for name in targets}
    sessions = {name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) for name in targets}
    try:
        for name, (url, headers) in targets.items():
            await load(sessions[name], url, payload, headers, concurrency, warmup, Samples())
        per_round = max(1, total // rounds)
        for _ in range(rounds):
            for name, (url, headers) in targets.items():
                pid = (pids or {}).get(name)
                before = cpu_seconds(pid) if pid else 0.0
                await load(sessions[name], url, payload, headers, concurrency, per_round, results[name])
                if pid:
                    results[name].cpu_s += cpu_seconds(pid) - before
    finally:
        for session in sessions.values():
            await session.close()
    return results

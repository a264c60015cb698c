"""The load side of `bench/compare`: wrk runs, a time-to-first-byte client, and /proc readings.

wrk drives throughput and latency (it is written in C, so the load generator is not what
limits the figures); the time to first byte needs to see a stream's first body byte, which wrk
does not report, so a small asyncio client measures it, one request at a time.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
LUA = HERE / "compare_post.lua"
WRK = shutil.which("wrk")
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def parse_wrk(output: str) -> WrkResult:
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if done is None:
        raise RuntimeError(f"wrk gave no result:\n{output}")
    seconds = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sockets:
        errors += sum(int(value) for value in sockets.groups())
    return WrkResult(
        requests=int(done.group(1)),
        seconds=seconds,
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
        errors=errors,
    )


def wrk(
    url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float, cpus: str | None
) -> WrkResult:
    """One wrk run: one thread, `connections` keep-alive connections, for `seconds`, bounded by a timeout."""
    assert WRK is not None
    command = [WRK, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "--latency", "-s", str(LUA), url]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    env = {
        **os.environ,
        "BENCH_BODY": body.decode(),
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items()),
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 30, check=False)
    return parse_wrk(done.stdout + done.stderr)


async def _ttfb(url: str, body: bytes, headers: dict[str, str], count: int) -> list[float]:
    """Seconds from sending a streamed request to its first body byte, one request at a time, one connection."""
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=30)
    found: list[float] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for index in range(count + 3):  # the first three warm the connection up
            started = time.perf_counter()
            async with session.post(url, data=body, headers={"content-type": "application/json", **headers}) as resp:
                first = None
                async for _ in resp.content.iter_any():
                    if first is None:
                        first = time.perf_counter()
                if resp.status != 200:
                    raise RuntimeError(f"{url} answered {resp.status}")
            if index >= 3 and first is not None:
                found.append(first - started)
    return found


def ttfb_ms(url: str, body: bytes, headers: dict[str, str], count: int) -> float:
    """The median time to first byte in milliseconds (NaN when the target fails streams)."""
    try:
        samples = asyncio.run(asyncio.wait_for(_ttfb(url, body, headers, count), timeout=60))
    except (RuntimeError, aiohttp.ClientError, TimeoutError):
        return float("nan")
    return statistics.median(samples) * 1000 if samples else float("nan")


def tree(pid: int) -> list[int]:
    """`pid` and every process below it (a gateway's workers, nginx's worker, a venv launcher's child)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_s(pid: int) -> float:
    """User and system CPU seconds used so far by `pid` and its descendants."""
    total = 0.0
    for each in tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def tree_peak_rss_mb(pid: int) -> float:
    """The sum of each process's peak resident set (VmHWM) over the tree, in MB."""
    total_kb = 0
    for each in tree(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        total_kb += int(found.group(1)) if found else 0
    return total_kb / 1024

"""The ledger under a real `agent-proxy serve` process: SIGTERM loses nothing, kill -9 at most one interval.

A load of concurrent clients (plain and streamed, OpenAI and Anthropic) runs against the
process; each response a client received whole is noted with its request id and when
it arrived. The ledger file is then read back after the process is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.ledger import ledger_rows
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.servers import free_port
from tests.fixtures.waiting import proxy_ready, wait_for

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 12
MAX_REQUESTS = 5000  # the load always ends by itself
MAX_SECONDS = 20.0
HI = [{"role": "user", "content": "hi"}]
BODIES = [
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": HI}),
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": HI, "stream": True}),
    ("/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": HI}),
    ("/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": HI, "stream": True}),
]


@pytest.fixture
def serve(tmp_path, fake_upstream):
    """Start `agent-proxy serve` with a ledger; yields (process, port, ledger path)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(flush_interval_ms: int) -> tuple[subprocess.Popen[bytes], int, Path]:
        ledger = tmp_path / "ledger.sqlite3"
        policy = tmp_path / "policy.yaml"
        extra = f"ledger: {{path: {ledger}, flush_interval_ms: {flush_interval_ms}}}\n"
        extra += "server: {shutdown_timeout_s: 10}"
        policy.write_text(basic_policy(fake_upstream.url, extra))
        port = free_port()
        command = [sys.executable, "-m", "proxy", "serve", "--policy", str(policy), "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--log-level", "warning"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started.append(process)
        wait_for(lambda: proxy_ready(port) or process.poll() is not None, timeout=20)
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        return process, port, ledger

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@dataclass
class Load:
    """Concurrent clients until the server goes away (or the bounds are hit)."""

    port: int
    headers: dict[str, str] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)  # request id -> when the whole response arrived
    reached: dict[int, asyncio.Event] = field(default_factory=dict)
    _sent: itertools.count[int] = field(default_factory=itertools.count)

    def after(self, count: int) -> asyncio.Event:
        return self.reached.setdefault(count, asyncio.Event())

    async def run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._worker(session, n, deadline) for n in range(WORKERS)))

    async def _worker(self, session: aiohttp.ClientSession, n: int, deadline: float) -> None:
        for index in itertools.count(n):
            if next(self._sent) >= MAX_REQUESTS or time.monotonic() > deadline:
                return
            path, body = BODIES[index % len(BODIES)]
            request_id = uuid.uuid4().hex
            headers = {"authorization": f"Bearer {DEMO_KEY}", "x-request-id": request_id, **self.headers}
            try:
                async with session.post(f"http://127.0.0.1:{self.port}{path}", json=body, headers=headers) as response:
                    data = await response.read()
            except (aiohttp.ClientError, OSError):
                return  # the server is gone
            if response.status == 200 and (not body.get("stream") or data.rstrip().endswith((b"[DONE]", b"}"))):
                self.received[request_id] = time.monotonic()
                for count, event in self.reached.items():
                    if len(self.received) >= count:
                        event.set()


def test_sigterm_under_load_leaves_a_ledger_row_for_every_response_received(serve):
    process, port, ledger = serve(flush_interval_ms=60_000)  # nothing is committed before the stop
    load = Load(port, headers={"x-mock-delay-s": "0.03"})  # so requests are in flight at the signal
    stopped_at: list[float] = []

    async def scenario() -> None:
        runner = asyncio.create_task(load.run())
        await load.after(100).wait()
        process.send_signal(signal.SIGTERM)
        stopped_at.append(time.monotonic())
        await runner

    asyncio.run(scenario())
    assert process.wait(20) == 0
    recorded = {row["request_id"] for row in ledger_rows(ledger)}
    missing = set(load.received) - recorded
    assert not missing, f"{len(missing)} of {len(load.received)} received responses have no ledger row"
    assert any(t > stopped_at[0] for t in load.received.values()), "requests in flight at SIGTERM were finished"


def test_kill_9_loses_at_most_the_last_flush_interval(serve):
    interval_s, margin_s = 0.1, 0.5
    process, port, ledger = serve(flush_interval_ms=int(interval_s * 1000))
    load = Load(port)
    killed_at: list[float] = []

    async def scenario() -> None:
        runner = asyncio.create_task(load.run())
        await load.after(50).wait()
        until = time.monotonic() + 1.0
        while time.monotonic() < until and not runner.done():  # keep the load on for a while, then kill it mid-flow
            await asyncio.wait({runner}, timeout=0.05)
        process.kill()
        killed_at.append(time.monotonic())
        await runner

    asyncio.run(scenario())
    process.wait(10)
    recorded = {row["request_id"] for row in ledger_rows(ledger)}
    cutoff = killed_at[0] - interval_s - margin_s
    old = {rid for rid, at in load.received.items() if at < cutoff}
    assert len(old) >= 50, "the load ran long enough before the kill"
    assert old <= recorded, f"{len(old - recorded)} responses older than one interval were lost"
    lost = set(load.received) - recorded
    assert all(load.received[rid] >= cutoff for rid in lost)

"""SIGTERM under streaming load: unready at once, streams finish within the grace, or end cleanly past it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import orjson

from tests.fixtures.ledger import ledger_rows
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy, serve_process
from tests.fixtures.servers import free_port
from tests.fixtures.waiting import proxy_ready, wait_for

STREAMS = 50
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True})


def start(tmp_path: Path, upstream_url: str, grace_s: float) -> tuple[subprocess.Popen[bytes], int, Path]:
    ledger = tmp_path / "ledger.sqlite3"
    path = tmp_path / "policy.yaml"
    extra = f"ledger: {{path: {ledger}, flush_interval_ms: 50}}\nserver: {{shutdown_timeout_s: {grace_s}}}"
    path.write_text(basic_policy(upstream_url, extra))
    port = free_port()
    process = serve_process(path, port)
    wait_for(lambda: proxy_ready(port) or process.poll() is not None, timeout=20)
    assert process.poll() is None
    return process, port, ledger


def readyz(port: int) -> int | None:
    """The status of /readyz, or None once nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


async def stream(session: aiohttp.ClientSession, port: int, words: int, started: asyncio.Event, count: list[int]):
    headers = {
        "authorization": f"Bearer {DEMO_KEY}",
        "content-type": "application/json",
        "x-mock-reply-words": str(words),
        "x-mock-event-interval-ms": "50",
    }
    async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", data=BODY, headers=headers) as answer:
        body = b""
        async for piece in answer.content.iter_any():
            if not body:
                count[0] += 1
                if count[0] == STREAMS:
                    started.set()
            body += piece
        return body  # read to its proper end: a cut would raise ClientPayloadError


async def unready_while(tasks: list[asyncio.Task[bytes]], port: int) -> tuple[int | None, int]:
    """Poll /readyz until the stopping process says it is unready (the signal is handled asynchronously):
    its last status, and how many streams were still in flight then."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        ready = await asyncio.to_thread(readyz, port)
        if ready != 200 or asyncio.get_running_loop().time() > deadline:
            return ready, sum(not task.done() for task in tasks)
        await asyncio.sleep(0.02)


async def under_load(
    port: int, process: subprocess.Popen[bytes], words: int
) -> tuple[list[bytes], tuple[int | None, int]]:
    started, count = asyncio.Event(), [0]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        tasks = [asyncio.create_task(stream(session, port, words, started, count)) for _ in range(STREAMS)]
        await asyncio.wait_for(started.wait(), 30)
        process.send_signal(signal.SIGTERM)
        ready = await unready_while(tasks, port)
        return await asyncio.gather(*tasks), ready


async def test_streams_in_flight_at_sigterm_finish_within_the_grace(tmp_path, fake_upstream):
    process, port, ledger = start(tmp_path, fake_upstream.url, grace_s=15.0)
    bodies, (ready, in_flight) = await under_load(port, process, words=40)  # about 2 s per stream
    assert ready != 200 and in_flight > 0, "unready (or no longer listening) while streams are still in flight"
    assert all(body.rstrip().endswith(b"data: [DONE]") for body in bodies), "every stream whole"
    assert await asyncio.to_thread(process.wait, 30) == 0
    rows = ledger_rows(ledger)
    assert len(rows) == STREAMS and {row["outcome"] for row in rows} == {"ok"}


async def test_streams_past_the_grace_end_with_the_protocols_error_event(tmp_path, fake_upstream):
    process, port, ledger = start(tmp_path, fake_upstream.url, grace_s=2.0)
    bodies, _ = await under_load(port, process, words=400)  # about 20 s per stream: far past the grace
    for body in bodies:
        last = body.strip().split(b"\n\n")[-1]
        assert orjson.loads(last.removeprefix(b"data: "))["error"]["code"] == "proxy_shutting_down"
    assert await asyncio.to_thread(process.wait, 30) == 0
    rows = ledger_rows(ledger)
    assert len(rows) == STREAMS and {row["outcome"] for row in rows} == {"error"}

"""Chaos: a few hundred mixed requests through the proxy to a seeded flaky upstream.

Every request must end with either the exact deterministic answer (once: a stream is never
duplicated by a retry) or a well-formed protocol error; afterwards nothing is left in
flight, no upstream connection is held, and memory is back near where it started.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest

from proxy.app import HANDLER
from proxy.mock_upstream import MockBehaviour
from proxy.mock_upstream.text import answer_words, word_deltas
from tests.e2e.test_resilience import breaker, policy
from tests.fixtures.fake_upstream import FakeUpstream
from tests.fixtures.proxy_server import DEMO_KEY
from tests.fixtures.waiting import wait_for

FAULTS = [None, "status_500", "status_503", "status_429", "reset", "cut_stream", "slow_first_byte", "hang"]
WEIGHTS = [60, 8, 5, 5, 6, 6, 8, 2]
REQUESTS, WARMUP, CONCURRENCY = 300, 60, 16
UPSTREAM = """
retries: {attempts: 3, backoff_base_s: 0.01, backoff_max_s: 0.05}
circuit_breaker: {failure_threshold: 5, recovery_timeout_s: 0.2, half_open_max_calls: 2}
"""
TIMEOUTS = "{connect_s: 1, first_byte_s: 0.4, idle_s: 2, total_s: 10}"
PROXY_ERROR_STATUSES = {429, 500, 502, 503, 504}
ANTHROPIC_ERRORS = {"rate_limit_error", "api_error", "overloaded_error", "timeout_error"}


@dataclass
class FlakyBehaviour(MockBehaviour):
    """A fault drawn per upstream request from a seeded RNG, so a retry may succeed where the first try failed."""

    seed: int = 20260105
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._rng = random.Random(self.seed)
        self.delay_s = 0.03  # what slow_first_byte waits

    def take_fault(self) -> str | None:
        with self._lock:
            return self._rng.choices(FAULTS, WEIGHTS)[0]


def expected(prompt: str) -> str:
    return "".join(word_deltas(answer_words(prompt, 12)))


async def one(i: int, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic) -> str:
    """'ok', or the kind of well-formed error; anything else fails the test."""
    prompt = f"question {i}"
    want, stream, messages = expected(prompt), i % 2 == 0, [{"role": "user", "content": prompt}]
    text = ""
    try:
        if i % 4 < 2:
            if stream:
                async for chunk in await oai.chat.completions.create(model="gpt-4o", messages=messages, stream=True):
                    text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            else:
                text = (await oai.chat.completions.create(model="gpt-4o", messages=messages)).choices[0].message.content
        elif stream:
            async with claude.messages.stream(model="claude-mock-1", max_tokens=64, messages=messages) as events:
                async for delta in events.text_stream:
                    text += delta
        else:
            message = await claude.messages.create(model="claude-mock-1", max_tokens=64, messages=messages)
            text = message.content[0].text
    except openai.APIStatusError as err:
        assert err.status_code in PROXY_ERROR_STATUSES, err
        assert isinstance(err.body, dict) and {"message", "type", "code"} <= set(err.body), err.body
        return f"error {err.status_code} {err.body['code']}"
    except openai.APIError as err:  # an error event ended a stream that had begun
        assert stream and want.startswith(text), (text, want)
        assert isinstance(err.body, dict) and err.body.get("type") == "server_error", err.body
        return "stream cut"
    except anthropic.APIStatusError as err:
        body: Any = err.body
        assert isinstance(body, dict) and body.get("type") == "error", body
        assert body["error"]["type"] in ANTHROPIC_ERRORS, body
        if err.status_code == 200:  # the error event of a stream that had begun
            assert stream and want.startswith(text), (text, want)
            return "stream cut"
        assert err.status_code in PROXY_ERROR_STATUSES, err
        return f"error {err.status_code}"
    assert text == want, (i, text, want)  # exactly once: never a replayed prefix
    return "ok"


async def run(proxy, count: int, offset: int = 0) -> list[str]:
    oai = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0, timeout=30)
    claude = anthropic.AsyncAnthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0, timeout=30)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated(i: int) -> str:
        async with gate:
            return await one(i, oai, claude)

    try:
        return await asyncio.gather(*(gated(offset + i) for i in range(count)))
    finally:
        await oai.close()
        await claude.close()


def upstream_connections(proxy) -> tuple[int, int]:
    """(held by a request, idle in the pool) of the proxy's upstream client."""
    transport = proxy.app[HANDLER].transport

    async def read() -> tuple[int, int]:
        return transport.connections()

    return proxy.run(read())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts file descriptors in /proc")
async def test_chaos_every_request_ends_well_and_nothing_leaks(proxy_factory):
    with FakeUpstream(FlakyBehaviour()) as flaky:
        proxy = proxy_factory(policy(flaky.url, UPSTREAM, timeouts=TIMEOUTS))
        await run(proxy, WARMUP, offset=10_000)  # pools, caches and code paths warm, then the baseline
        flaky.requests.clear()
        gc.collect()
        fds_before = open_fds()
        tracemalloc.start()
        try:
            results = await run(proxy, REQUESTS)
            upstream_requests = len(flaky.requests)
            flaky.requests.clear()  # the fake's request log is the test's memory, not the proxy's
            wait_for(lambda: proxy.metric("agent_proxy_requests_in_flight") == 0)
            wait_for(lambda: upstream_connections(proxy)[0] == 0)
            gc.collect()
            grown, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        tally = {kind: results.count(kind) for kind in set(results)}
        assert len(results) == REQUESTS
        assert tally.get("ok", 0) >= REQUESTS // 2, tally  # retries hide most faults
        assert upstream_requests <= REQUESTS * 3, "attempts never exceed the policy"
        for upstream in ("primary-openai", "primary-anthropic"):
            row = breaker(proxy, upstream)
            assert row["in_flight"] == 0 and row["probes_in_flight"] == 0, row
        held, idle = upstream_connections(proxy)
        assert held == 0 and idle <= CONCURRENCY * 2
        assert open_fds() <= fds_before + CONCURRENCY, "sockets are closed or pooled, not leaked"
        assert grown < 3 * 1024 * 1024, f"{grown} bytes still allocated since the baseline"

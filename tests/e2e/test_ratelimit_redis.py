"""Limits shared through a real Redis: several proxy processes hold one limit; Redis outages follow the policy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from proxy.accounting import tokens
from tests.fixtures.http import post
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.servers import free_port
from tests.fixtures.waiting import proxy_ready, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {DEMO_KEY}"}


def redis_policy(upstream: str, redis_url: str, limits: str, on_error: str = "fail_open", state: str = "") -> str:
    state = (
        f"state: {{backend: redis, redis_url: '{redis_url}', on_backend_error: {on_error}, "
        f"redis_timeout_ms: 200, key_prefix: 't{uuid.uuid4().hex[:12]}:'{state}}}\n"
    )
    return basic_policy(upstream, state + f"callers:\n  default: {{}}\n  demo:\n    rate_limit: {limits}\n")


@pytest.fixture
def proxy_processes(tmp_path):
    """Start `python -m proxy serve` processes on a policy text; all are killed after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(policy_text: str, count: int) -> list[int]:
        policy = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
        policy.write_text(policy_text)
        ports = [free_port() for _ in range(count)]
        for port in ports:
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "proxy", "serve", "--policy", str(policy), "--port", str(port)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )
        for port, process in zip(ports, started[-count:], strict=True):
            wait_for(lambda p=port, proc=process: proxy_ready(p) or proc.poll() is not None, timeout=30)
            assert process.poll() is None, "a proxy process exited at startup"
        return ports

    start.processes = started  # type: ignore[attr-defined]
    yield start
    for process in started:
        process.kill()
        process.wait(10)


def test_three_proxy_processes_share_one_limit(redis_server, fake_upstream, proxy_processes):
    ports = proxy_processes(redis_policy(fake_upstream.url, redis_server.url, "{requests_per_minute: 12}"), 3)

    def one(index: int) -> tuple[int, int]:
        port = ports[index % 3]
        return port, post(f"http://127.0.0.1:{port}{CHAT}", BODY, AUTH).status

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(48)))
    statuses = Counter(status for _, status in results)
    assert set(statuses) == {200, 429}
    # The limit, not three times it (one more may have come back during the burst: one every 5 s).
    assert 12 <= statuses[200] <= 13
    assert fake_upstream.count(CHAT) == statuses[200]
    assert {port for port, status in results if status == 429} == set(ports)  # every replica enforces it


def _statuses(base_url: str, count: int) -> list[int | str]:
    """`count` concurrent requests through the SDK; a client timeout would show a hang."""
    client = openai.OpenAI(base_url=base_url, api_key=DEMO_KEY, max_retries=0, timeout=3.0)

    def one(_: int) -> int | str:
        try:
            client.chat.completions.create(**BODY)
            return 200
        except openai.APIStatusError as exc:
            return exc.status_code
        except openai.APITimeoutError:
            return "hung"

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_redis_outages_fail_open_or_closed_and_limits_come_back(own_redis, fake_upstream, proxy_factory):
    limits = "{requests_per_minute: 5}"
    opened = proxy_factory(redis_policy(fake_upstream.url, own_redis.url, limits, "fail_open"))
    closed = proxy_factory(redis_policy(fake_upstream.url, own_redis.url, limits, "fail_closed"))
    assert _statuses(opened.openai_base_url, 1) == [200]
    assert _statuses(closed.openai_base_url, 1) == [200]

    own_redis.pause()  # frozen: every call runs into its 200 ms timeout
    try:
        assert _statuses(opened.openai_base_url, 8) == [200] * 8
        assert _statuses(closed.openai_base_url, 8) == [503] * 8
        status, body = closed.get("/readyz")
        assert status == 503 and b'"reachable": false' in body
        status, body = opened.get("/readyz")
        assert status == 200 and b'"reachable": false' in body
    finally:
        own_redis.resume()
    own_redis.kill()  # gone: connections refused
    assert _statuses(opened.openai_base_url, 8) == [200] * 8
    assert _statuses(closed.openai_base_url, 8) == [503] * 8
    with pytest.raises(openai.InternalServerError) as unavailable:
        openai.OpenAI(base_url=closed.openai_base_url, api_key=DEMO_KEY, max_retries=0).chat.completions.create(**BODY)
    assert unavailable.value.status_code == 503 and unavailable.value.code == "limits_unavailable"

    own_redis.start()  # back, empty: the limits hold again, with no restart of the proxies
    for proxy in (opened, closed):
        wait_for(lambda p=proxy: p.get("/readyz")[0] == 200)
        assert _statuses(proxy.openai_base_url, 6).count(429) == 1
    errors = opened.metric("agent_proxy_state_backend_errors_total", {"backend": "redis", "op": "acquire"})
    assert errors >= 1
    assert opened.metric("agent_proxy_limit_admissions_total", {"caller": "demo", "how": "fail_open"}) == 16
    assert (
        closed.metric(
            "agent_proxy_limit_refusals_total", {"caller": "demo", "reason": "backend_unavailable", "mode": "enforce"}
        )
        == 17
    )
    assert opened.metric("agent_proxy_state_backend_up", {"backend": "redis"}) == 1


# ---- settlement through outages, crashed replicas, dense text

PACED = {"x-mock-event-interval-ms": "100", "x-mock-reply-words": "20"}  # a stream of about two seconds


def _stream(base_url: str, started: list[int], go: threading.Event | None, headers: dict[str, str]) -> int | str:
    """One streamed chat completion: 200 once read to its end (after `go`, when given), else the refusal."""
    client = openai.OpenAI(base_url=base_url, api_key=DEMO_KEY, max_retries=0, timeout=30)
    try:
        stream = client.chat.completions.create(**BODY, stream=True, max_tokens=2000, extra_headers=headers)
    except openai.APIStatusError as exc:
        return exc.status_code
    try:
        with stream:
            chunks = iter(stream)
            next(chunks)
            started.append(1)
            if go is not None:
                go.wait(30)
            for _ in chunks:
                pass
    except Exception:  # the replica serving it was killed: whatever the transport raises
        return "cut"
    return 200


def _sum(proxies, name: str) -> float:
    return sum(proxy.metric(name, {"backend": "redis"}) for proxy in proxies)


def test_a_redis_stall_while_streams_end_loses_no_release_and_no_refund(own_redis, fake_upstream, proxy_factory):
    """Three streams of a `concurrent: 3` caller end while Redis is frozen: within 2 s of its resume the
    slots are back and the tokens refunded, so the next three are admitted (and a fourth is not)."""
    policy = redis_policy(fake_upstream.url, own_redis.url, "{concurrent: 3, tokens_per_minute: 7000}")
    proxies = [proxy_factory(policy), proxy_factory(policy)]
    started: list[int] = []
    with ThreadPoolExecutor(3) as pool:
        streams = [pool.submit(_stream, proxies[i % 2].openai_base_url, started, None, PACED) for i in range(3)]
        wait_for(lambda: len(started) == 3 or any(s.done() for s in streams))
        own_redis.pause()  # the three end while Redis is frozen: releases and refunds meet the stall
        try:
            assert [s.result() for s in streams] == [200, 200, 200]
            wait_for(lambda: _sum(proxies, "agent_proxy_state_settlements_deferred_total") == 3)
            assert _sum(proxies, "agent_proxy_state_settlements_pending") == 3
        finally:
            own_redis.resume()
    resumed = time.monotonic()
    wait_for(lambda: _sum(proxies, "agent_proxy_state_settlements_pending") == 0, timeout=2.0)
    assert time.monotonic() - resumed < 2.0

    # Each stream reserved ~2100 tokens of 7000: without the refunds not even one more would pass.
    started.clear()
    go = threading.Event()
    with ThreadPoolExecutor(3) as pool:
        burst = [pool.submit(_stream, proxies[i % 2].openai_base_url, started, go, PACED) for i in range(3)]
        wait_for(lambda: len(started) == 3 or any(s.done() for s in burst))
        fourth = post(f"{proxies[0].url}{CHAT}", {**BODY, "max_tokens": 1}, AUTH)
        go.set()
        assert [s.result() for s in burst] == [200, 200, 200]
    assert fourth.status == 429  # released once each: the cap still holds
    assert _sum(proxies, "agent_proxy_state_settlements_dropped_total") == 0


def test_the_slots_of_a_killed_replica_come_back_within_the_lease(redis_server, fake_upstream, proxy_processes):
    lease_s = 2.0
    policy = redis_policy(fake_upstream.url, redis_server.url, "{concurrent: 2}", state=f", lease_s: {lease_s}")
    doomed, survivor = proxy_processes(policy, 2)
    long = {"x-mock-event-interval-ms": "200", "x-mock-reply-words": "150"}  # thirty seconds
    started: list[int] = []
    survivor_url = f"http://127.0.0.1:{survivor}{CHAT}"
    with ThreadPoolExecutor(2) as pool:
        streams = [pool.submit(_stream, f"http://127.0.0.1:{doomed}/v1", started, None, long) for _ in range(2)]
        wait_for(lambda: len(started) == 2 or any(s.done() for s in streams), timeout=10)
        # Renewed while they live: held well past one lease, the cap stays full on every replica.
        held_until = time.monotonic() + 1.5 * lease_s
        while time.monotonic() < held_until:
            assert post(survivor_url, BODY, AUTH).status == 429
            time.sleep(0.2)
        proxy_processes.processes[-2].kill()  # SIGKILL mid-stream: no release is ever sent
        killed = time.monotonic()
        wait_for(lambda: post(survivor_url, BODY, AUTH).status == 200, timeout=lease_s + 3)
        reclaimed = time.monotonic() - killed
        assert set(s.result() for s in streams) == {"cut"}
    assert reclaimed <= lease_s + 1.0


DENSE = {
    "cjk": "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1500)),
    "digits": "".join(str(i * 7919 % 100_003) for i in range(600)),
    "code": "def f(a,b):\n\treturn{k:[a[i]^b[j]for j in range(9)]for i,k in enumerate(b)}#\u00e9\u00df\n" * 40,
}


@pytest.mark.parametrize("limit", ["budget", "tokens"])
@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_dense_text_cannot_push_spend_or_tokens_past_the_bound(
    backend, limit, redis_server, fake_upstream, proxy_factory
):
    """100 concurrent requests of text that tokenizes densely (CJK, digits, code), counted with the exact
    tokenizer: a $0.01 budget is overshot by less than one request's cost, 10,000 tokens per minute by
    nothing but the bucket's refill while the burst lasts."""
    fake_upstream.behaviour.omit_usage = True  # the proxy counts the tokens itself, exactly
    # An answer within `max_tokens`, as the bound assumes: the mock's default answer echoes the prompt's first
    # words, and a CJK prompt is one 1,500-character "word", thousands of tokens past the cap.
    fake_upstream.behaviour.reply_words = 3
    state = (
        # A generous timeout: on a loaded machine a Redis call past the default 250 ms would be admitted
        # uncounted (fail_open, as documented), which is not what this test measures.
        f"state: {{backend: redis, redis_url: '{redis_server.url}', key_prefix: 'd{uuid.uuid4().hex[:12]}:', "
        "redis_timeout_ms: 5000}\n"
        if backend == "redis"
        else ""
    )
    limits = "budget: {usd_per_day: 0.01}" if limit == "budget" else "rate_limit: {tokens_per_minute: 10000}"
    extra = (
        state
        + "pricing:\n  gpt-4o: {input: 1.0, output: 0.0}\n"
        + f"callers:\n  default: {{}}\n  demo:\n    {limits}\n"
    )
    proxy = proxy_factory(basic_policy(fake_upstream.url, extra))
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    used: dict[str, int] = {}

    def one(kind: str) -> tuple[str, int]:
        try:
            answer = client.chat.completions.create(
                model="gpt-4o", max_tokens=20, messages=[{"role": "user", "content": DENSE[kind]}]
            )
            text = answer.choices[0].message.content or ""
            used[kind] = max(used.get(kind, 0), tokens.count_tokens(text, "gpt-4o"))  # the answer's tokens
            return kind, 200
        except openai.APIStatusError as exc:
            return kind, exc.status_code

    began = time.monotonic()
    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, (list(DENSE) * 34)[:100]))
    elapsed = time.monotonic() - began
    prompt = {
        kind: tokens.count_messages([{"role": "user", "content": text}], "gpt-4o") for kind, text in DENSE.items()
    }
    assert min(prompt.values()) > 900  # dense indeed: characters / 4 would have guessed 375 to 750
    assert {status for _, status in results} <= {200, 429} and 200 in {status for _, status in results}
    admitted = [kind for kind, status in results if status == 200]
    if limit == "budget":
        spent = sum(prompt[kind] for kind in admitted) / 1e6
        assert spent < 0.01 + max(prompt.values()) / 1e6
    else:
        assert sum(prompt[kind] + used[kind] for kind in admitted) <= 10_000 * (1 + elapsed / 60)

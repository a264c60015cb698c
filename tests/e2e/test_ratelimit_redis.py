"""Limits shared through a real Redis: several proxy processes hold one limit; Redis outages follow the policy."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.fixtures.http import post
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.servers import free_port
from tests.fixtures.waiting import proxy_ready, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {DEMO_KEY}"}


def redis_policy(upstream: str, redis_url: str, limits: str, on_error: str = "fail_open") -> str:
    state = (
        f"state: {{backend: redis, redis_url: '{redis_url}', on_backend_error: {on_error}, "
        f"redis_timeout_ms: 200, key_prefix: 't{uuid.uuid4().hex[:12]}:'}}\n"
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

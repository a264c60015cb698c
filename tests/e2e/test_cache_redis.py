"""Two proxy processes share cached answers through a real Redis; a Redis outage only turns hits into misses."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.fixtures.http import request
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy, serve_process
from tests.fixtures.servers import free_port
from tests.fixtures.waiting import proxy_ready, wait_for

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "shared between replicas?"}]}
AUTH = {"authorization": f"Bearer {DEMO_KEY}"}


def redis_policy(upstream_url: str, redis_url: str, prefix: str) -> str:
    extra = f"state: {{backend: redis, redis_url: '{redis_url}', key_prefix: '{prefix}'}}\nstages:\n  cache: {{}}\n"
    return basic_policy(upstream_url, extra)


@pytest.fixture
def replicas(tmp_path, fake_upstream, redis_server) -> Iterator[list[int]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(redis_policy(fake_upstream.url, redis_server.url, "cache-two-replicas:"))
    processes: list[subprocess.Popen[bytes]] = []
    ports = [free_port(), free_port()]
    try:
        for port in ports:
            processes.append(serve_process(policy, port))
        for port, process in zip(ports, processes, strict=True):
            wait_for(lambda p=port, proc=process: proxy_ready(p) or proc.poll() is not None, timeout=30)
            assert process.poll() is None, "a proxy process did not start"
        yield ports
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(30)


def metric(port: int, line_start: str) -> float:
    text = request("GET", f"http://127.0.0.1:{port}/metrics").body.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def test_a_hit_is_shared_across_two_proxy_processes(replicas, fake_upstream):
    first, second = replicas
    miss = request("POST", f"http://127.0.0.1:{first}{CHAT}", BODY, AUTH)
    assert miss.status == 200 and miss.headers["x-cache"] == "MISS"
    wait_for(lambda: metric(first, "agent_proxy_cache_stored_total") == 1)
    hit = request("POST", f"http://127.0.0.1:{second}{CHAT}", BODY, AUTH)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.json()["choices"][0]["message"]["content"] == miss.json()["choices"][0]["message"]["content"]
    assert fake_upstream.count(CHAT) == 1


def test_redis_down_means_misses_not_failures(proxy_factory, fake_upstream, own_redis):
    proxy = proxy_factory(redis_policy(fake_upstream.url, own_redis.url, "cache-down:"))
    url = proxy.url + CHAT
    assert request("POST", url, BODY, AUTH).headers["x-cache"] == "MISS"
    wait_for(lambda: proxy.metric("agent_proxy_cache_stored_total", {"route": "openai"}) == 1)
    assert request("POST", url, BODY, AUTH).headers["x-cache"] == "HIT"
    own_redis.kill()
    down = request("POST", url, BODY, AUTH)
    assert down.status == 200 and down.headers["x-cache"] == "MISS"
    assert proxy.metric("agent_proxy_cache_backend_errors_total", {"op": "get"}) >= 1
    assert fake_upstream.count(CHAT) == 2

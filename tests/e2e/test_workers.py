"""`agent-proxy serve --workers 2`: two processes on one port, metrics summed, one ledger, limits in Redis."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx  # the HTTP client the openai SDK is built on, so one connection serves both
import openai
import pytest

from tests.fixtures.fake_upstream import FakeUpstream
from tests.fixtures.ledger import ledger_rows
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.servers import LOOPBACK, free_port
from tests.fixtures.waiting import proxy_ready, wait_for

ROOT = Path(__file__).resolve().parents[2]
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
WORKER_SERIES = re.compile(r'^agent_proxy_worker_started_timestamp_seconds\{pid="(\d+)"\}', re.MULTILINE)


def serve_workers(policy: Path, port: int) -> list[str]:
    """`serve --workers 2` on 127.0.0.1:`port`."""
    argv = [sys.executable, "-m", "proxy", "serve", "--policy", str(policy), "--host", LOOPBACK]
    return [*argv, "--port", str(port), "--workers", "2"]


class Workers:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path, policy: Path):
        self.process, self.port, self.log, self.policy = process, port, log, policy
        self.base = f"http://{LOOPBACK}:{port}"

    def metrics(self) -> str:
        return httpx.get(self.base + "/metrics", timeout=5).text

    def live_pids(self) -> set[int]:
        """Workers alive now, by the per-worker series of /metrics (a dead worker's is removed).

        Empty when the scrape's connection was reset: right after a SIGKILL the kernel may still
        have queued it on the dead worker's socket.
        """
        try:
            return {int(pid) for pid in WORKER_SERIES.findall(self.metrics())}
        except httpx.TransportError:
            return set()

    def client_per_worker(self, count: int = 2) -> dict[int, httpx.Client]:
        """One keep-alive connection to each worker: /healthz on it says which process holds it."""
        found: dict[int, httpx.Client] = {}
        for _ in range(64):  # the kernel picks a worker per connection; both appear within a few
            client = httpx.Client(base_url=self.base, limits=httpx.Limits(max_connections=1), timeout=10)
            pid = client.get("/healthz").json()["worker"]
            if pid in found:
                client.close()
            else:
                found[pid] = client
            if len(found) == count:
                return found
        raise AssertionError(f"connections reached only workers {sorted(found)}")


@pytest.fixture
def workers(tmp_path) -> Iterator[Callable[[str], Workers]]:
    started: list[Workers] = []

    def start(policy_text: str) -> Workers:
        policy = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
        policy.write_text(policy_text)
        port = free_port()
        log = tmp_path / f"workers-{port}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                serve_workers(policy, port),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=sink,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        found = Workers(process, port, log, policy)
        started.append(found)
        wait_for(lambda: proxy_ready(port) or process.poll() is not None, timeout=30)
        assert process.poll() is None, log.read_text()
        wait_for(lambda: len(found.live_pids()) == 2 or process.poll() is not None, timeout=30)
        assert process.poll() is None, log.read_text()  # a worker that could not start stops them all
        return found

    yield start
    for found in started:
        if found.process.poll() is None:
            found.process.send_signal(signal.SIGTERM)
            try:
                found.process.wait(20)
            except subprocess.TimeoutExpired:
                found.process.kill()
                found.process.wait(10)


def chat(client: httpx.Client, session: str, **headers: str) -> openai.types.chat.ChatCompletion:
    sdk = openai.OpenAI(
        base_url=f"{str(client.base_url).rstrip('/')}/v1", api_key=DEMO_KEY, max_retries=0, http_client=client
    )
    return sdk.chat.completions.create(**BODY, extra_headers={"x-session-id": session, **headers})


def test_two_workers_count_into_one_metrics_and_one_ledger_then_drain_on_sigterm(tmp_path, fake_upstream, workers):
    ledger = tmp_path / "ledger.sqlite3"
    proxy = workers(basic_policy(fake_upstream.url, f"ledger: {{path: '{ledger}', flush_interval_ms: 50}}\n"))
    clients = proxy.client_per_worker()
    assert set(clients) == proxy.live_pids() and len(clients) == 2  # two processes serve the port
    for client in clients.values():
        for _ in range(5):
            assert chat(client, "s1").choices[0].message.content
    # Whichever worker answers /metrics, the counter is the sum of both workers' five.
    for _ in range(4):
        assert 'agent_proxy_requests_total{route="openai",status_class="2xx",upstream="up-openai"} 10.0' in (
            proxy.metrics()
        )

    slow_client = next(iter(clients.values()))
    answered: list[str | None] = []
    slow = threading.Thread(
        target=lambda: answered.append(chat(slow_client, "s1", **{"x-mock-delay-s": "1"}).choices[0].message.content)
    )
    slow.start()
    wait_for(lambda: "agent_proxy_requests_in_flight 1.0" in proxy.metrics(), timeout=10)
    proxy.process.send_signal(signal.SIGTERM)
    slow.join(20)
    assert answered and answered[0]  # the request in flight finished
    assert proxy.process.wait(20) == 0, proxy.log.read_text()
    for client in clients.values():
        client.close()

    rows = ledger_rows(ledger, "session_id = ?", ("s1",))
    assert len(rows) == 11 and len({row["request_id"] for row in rows}) == 11  # none lost, none twice
    assert fake_upstream.count("/v1/chat/completions") == 11


def test_a_killed_worker_is_replaced_and_limits_hold_across_workers_through_redis(
    redis_server, fake_upstream: FakeUpstream, workers
):
    state = (
        f"state: {{backend: redis, redis_url: '{redis_server.url}', key_prefix: 't{uuid.uuid4().hex[:12]}:'}}\n"
        "callers:\n  default: {}\n  demo:\n    rate_limit: {requests_per_minute: 6}\n"
    )
    proxy = workers(basic_policy(fake_upstream.url, state))
    killed = next(iter(proxy.client_per_worker()))
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: (pids := proxy.live_pids()) and len(pids) == 2 and killed not in pids, timeout=30)

    statuses: Counter[tuple[int, int]] = Counter()
    for pid, client in proxy.client_per_worker().items():
        assert pid != killed
        for _ in range(8):
            response = client.post("/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {DEMO_KEY}"})
            statuses[pid, response.status_code] += 1
        client.close()
    passed = sum(count for (_, status), count in statuses.items() if status == 200)
    # One limit for both workers (per-worker memory would pass 12); one more may refill during the run.
    assert 6 <= passed <= 7, statuses
    assert passed + sum(count for (_, status), count in statuses.items() if status == 429) == 16
    assert fake_upstream.count("/v1/chat/completions") == passed
    assert proxy.process.poll() is None


def test_a_taken_port_stops_the_workers_with_exit_2(tmp_path, fake_upstream):
    policy = tmp_path / "policy.yaml"
    policy.write_text(basic_policy(fake_upstream.url))
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = subprocess.run(
            serve_workers(policy, port),
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
    assert process.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in process.stderr.decode()


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # exited; its new parent may not have reaped it yet


def test_sighup_reaches_every_worker_and_a_parent_killed_outright_takes_its_workers_along(fake_upstream, workers):
    text = basic_policy(fake_upstream.url, "server: {reload_interval_s: 3600}\n")  # no file poll: only SIGHUP reloads
    proxy = workers(text)
    clients = proxy.client_per_worker()
    auth = {"authorization": f"Bearer {DEMO_KEY}"}
    assert [c.post("/v1/chat/completions", json=BODY, headers=auth).status_code for c in clients.values()] == [200, 200]

    demo_key = next(line for line in text.splitlines() if "caller: demo" in line)
    proxy.policy.write_text(text.replace(demo_key, ""))
    proxy.process.send_signal(signal.SIGHUP)
    try:
        for client in clients.values():  # each worker, on its own connection, now refuses the removed key
            wait_for(lambda c=client: c.post("/v1/chat/completions", json=BODY, headers=auth).status_code == 401, 30)
            client.close()

        proxy.process.kill()
        proxy.process.wait(10)
        wait_for(lambda: all(gone(pid) for pid in clients), timeout=30)
    except AssertionError as exc:  # what the workers said, for a failure on a loaded machine
        raise AssertionError(f"{exc}; workers {sorted(clients)}; log:\n{proxy.log.read_text()[-4000:]}") from None

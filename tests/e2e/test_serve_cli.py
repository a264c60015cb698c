"""`agent-proxy serve` as a real process: the offline demo, SIGHUP reload, graceful SIGTERM."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import anthropic
import openai
import pytest

from tests.fixtures.proxy_server import serve_process
from tests.fixtures.servers import free_port
from tests.fixtures.waiting import proxy_ready, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(tmp_path):
    policy = tmp_path / "demo.yaml"
    shutil.copy(ROOT / "policies" / "demo.yaml", policy)
    port = free_port()
    process = serve_process(policy, port, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        wait_for(lambda: proxy_ready(port) or process.poll() is not None, timeout=20)
        assert process.poll() is None, process.stderr.read().decode()
        yield process, port, policy
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_offline_demo_serves_both_sdks_then_stops_gracefully(demo):
    process, port, policy = demo
    chat = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="demo-key-1", max_retries=0)
    answer = chat.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content
    claude = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="demo-key-1", max_retries=0)
    assert (
        claude.messages.create(model="claude-mock-1", max_tokens=20, messages=[{"role": "user", "content": "hello"}])
        .content[0]
        .text
    )

    # SIGHUP reloads: an edit that drops the demo key takes effect.
    policy.write_text(policy.read_text().replace("- {caller: demo, id: demo-1", "# removed"))
    process.send_signal(signal.SIGHUP)

    def refused() -> bool:
        try:
            chat.models.list()
        except openai.AuthenticationError:
            return True
        return False

    wait_for(refused, timeout=10)
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    log = process.stderr.read().decode()
    assert '"msg":"policy reloaded"' in log and '"msg":"stopped"' in log
    assert "demo-key-1" not in log


def test_a_log_pipe_nobody_reads_never_stalls_requests(demo):
    """Far more log lines than a pipe buffer holds, while stderr is not read: every request is answered."""
    process, port, _ = demo
    chat = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="demo-key-1", max_retries=0, timeout=10)
    sent = 600  # a request line is ~400 bytes: a 64 KiB pipe is full after ~160 of them
    for _ in range(sent):
        assert chat.models.list().data
    process.send_signal(signal.SIGTERM)
    _, log = process.communicate(timeout=30)  # reading now lets the writer thread drain the queue
    assert process.returncode == 0
    lines = log.decode().splitlines()
    assert sum('"msg":"request"' in line for line in lines) == sent
    assert '"msg":"stopped"' in lines[-1]

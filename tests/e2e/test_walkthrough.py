"""The README's walkthrough, run as written against `agent-proxy serve --policy policies/demo.yaml`.

Each step is a fenced block after `<!-- walkthrough: NAME -->` (shell or Python) and the output
the README promises, a fenced block after `<!-- expect -->`. Every promised line must come back
as a line of the output, `...` standing for any text and runs of spaces for any run of spaces;
a line of just `...` only elides. The steps run in the README's order against one demo process
started from a copy of the policy in a directory of its own, where the demo's relative ledger
lands as it does in a checkout, so the README cannot drift from the product.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.proxy_server import serve_process
from tests.fixtures.servers import free_port
from tests.fixtures.waiting import proxy_ready, wait_for

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEMO = Path("policies/demo.yaml")
SERVE = f"agent-proxy serve --policy {DEMO}"
STEP = re.compile(
    r"<!-- walkthrough: ([a-z-]+) -->\n```(sh|python)\n(.*?)```\n<!-- expect -->\n```text\n(.*?)```", re.S
)
# What the issue asks the walkthrough to show; more steps are welcome.
REQUIRED = {"redaction", "rate-limit", "cache", "semantic", "usage", "status", "metrics", "sdk"}
# Steps that only read: run again until their figures have settled (the ledger is written in
# batches, and a request's accounting completes just after its caller has the answer).
READ_ONLY = {"usage", "status", "metrics"}
SETTLE_S = 10.0
# Steps that ask a paraphrase of an earlier step's question, which is embedded in a thread after its
# answer has gone: before them, wait until the semantic index holds that many questions (every answer
# the demo caller and the trial caller were given from upstream so far, on the openai route).
INDEXED_BEFORE = {"semantic-paraphrase": 9}
INDEXED = 'agent_proxy_cache_semantic_indexed_total{route="openai"}'


@dataclass(frozen=True)
class Step:
    name: str
    language: str
    code: str
    expected: list[str]


def readme_steps(text: str) -> list[Step]:
    return [
        Step(name, language, code, [line for line in expect.splitlines() if line.strip() not in ("", "...")])
        for name, language, code, expect in STEP.findall(text)
    ]


def squash(line: str) -> str:
    return re.sub(r"\s+", " ", line.strip())


def line_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in squash(expected).split("...")))


def missing_lines(expected: list[str], output: str) -> list[str]:
    lines = [squash(line) for line in output.splitlines()]
    return [e for e in expected if not any(line_pattern(e).fullmatch(line) for line in lines)]


def test_readme_marks_the_steps_the_walkthrough_must_show():
    text = README.read_text()
    steps = readme_steps(text)
    assert {s.name for s in steps} >= REQUIRED
    assert text.count("<!-- walkthrough:") == len(steps), "a walkthrough block without an expect block"
    assert all(s.expected for s in steps)
    assert SERVE in text  # the quickstart starts the demo the steps run against


def installed_extras(text: str) -> list[set[str]]:
    return [set(extras.split(",")) for extras in re.findall(r"pip install .*?-e '\.\[([a-z,]+)\]'", text)]


def test_the_readme_installs_what_the_demo_and_ci_need():
    quickstart, tests = installed_extras(README.read_text())[:2]
    assert quickstart == {"semantic"}  # the demo's semantic cache; without it, exact caching only
    assert installed_extras((ROOT / ".ci" / "run").read_text()) == [tests]  # CI runs the README's test command


def test_expected_lines_match_with_ellipses_and_any_spacing():
    output = "usage by caller\ndemo     3     7  0.000012\r\n"
    assert missing_lines(["demo 3 ...", "usage by caller", "... 0.000012"], output) == []
    assert missing_lines(["demo 4 ...", "demo 3", "demo 30 ..."], output) == ["demo 4 ...", "demo 3", "demo 30 ..."]
    assert missing_lines(["demo 3 7 ...", "dem... 7 ..."], output) == []
    assert missing_lines(['{"a":[1]}'], '{"a":[1]}') == [] and missing_lines(["a.b"], "axb") == ["a.b"]


@pytest.fixture
def demo_dir(tmp_path):
    """A working directory like a checkout's: the demo policy, and `agent-proxy` on the PATH running this code."""
    (tmp_path / "policies").mkdir()
    shutil.copy(ROOT / DEMO, tmp_path / DEMO)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "agent-proxy"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m proxy "$@"\n')
    shim.chmod(0o755)
    return tmp_path


def run_step(step: Step, port: int, cwd: Path) -> str:
    code = step.code.replace("localhost:8080", f"127.0.0.1:{port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env["PATH"] = f"{cwd / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    argv = [sys.executable, "-c", code] if step.language == "python" else ["bash", "-o", "pipefail", "-c", code]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"step {step.name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def indexed(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        samples = response.read().decode().splitlines()
    return next((float(line.split()[-1]) for line in samples if line.startswith(INDEXED + " ")), 0.0)


def step_output(step: Step, port: int, cwd: Path) -> str:
    if step.name in INDEXED_BEFORE:
        wanted = INDEXED_BEFORE[step.name]
        try:
            wait_for(lambda: indexed(port) == wanted, timeout=SETTLE_S)
        except AssertionError:
            pytest.fail(f"step {step.name}: {INDEXED} is {indexed(port)}, not {wanted}")
    output = run_step(step, port, cwd)
    deadline = time.monotonic() + SETTLE_S
    while step.name in READ_ONLY and missing_lines(step.expected, output) and time.monotonic() < deadline:
        time.sleep(0.2)  # another process's batches: nothing to await but the command's own answer
        output = run_step(step, port, cwd)
    return output


def test_the_readme_walkthrough_shows_what_the_demo_does(demo_dir):
    if shutil.which("curl") is None:
        pytest.skip("the walkthrough's commands use curl")
    pytest.importorskip("onnxruntime", reason="the demo's semantic cache needs the semantic extra")
    port = free_port()
    process = serve_process(DEMO, port, stderr=subprocess.PIPE, cwd=demo_dir)
    try:
        wait_for(lambda: proxy_ready(port) or process.poll() is not None, timeout=20)
        assert process.poll() is None, process.stderr.read().decode()
        for step in readme_steps(README.read_text()):
            output = step_output(step, port, demo_dir)
            missing = missing_lines(step.expected, output)
            assert not missing, f"step {step.name}: the README promises {missing}; it printed:\n{output}"
        assert (demo_dir / "agent-proxy-ledger.sqlite3").exists()  # where the README says the ledger is
    finally:
        process.terminate()
        _, log = process.communicate(timeout=30)
    assert process.returncode == 0, log.decode()[-2000:]
    assert "demo-key-1" not in log.decode() and "jane@corp.io" not in log.decode()

"""`bench/compare --quick` end to end, so the comparison does not rot: the upstream and agent-proxy only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")


def compare(results: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`bench/compare --quick` with 1-second load runs, its table written under `results`."""
    command = [str(ROOT / "bench" / "compare"), "--quick", "--seconds", "1", "--ttfb-requests", "5", *args]
    return subprocess.run(
        [*command, "--results-dir", str(results)],
        env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_quick_compare_writes_and_prints_a_table(tmp_path):
    done = compare(tmp_path, "--targets", "aiohttp-floor,auth-only,full-chain")
    assert done.returncode == 0, done.stderr[-3000:]
    written = sorted(tmp_path.glob("compare-*-quick.md"))
    assert len(written) == 1
    table = written[0].read_text()
    assert table in done.stdout  # printed as written
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    floor = "aiohttp floor (server and client, no policy)"
    assert set(rows) >= {"upstream alone (direct)", floor, "agent-proxy, auth only", "agent-proxy, full chain"}
    for name in (floor, "agent-proxy, auth only", "agent-proxy, full chain"):
        assert "fails" not in rows[name], rows[name]
    assert "`taskset`" in table or "no CPU pinning" in table
    raw = orjson.loads(written[0].with_suffix(".json").read_bytes())
    measured = raw["rounds"][0]["full-chain"]
    assert measured["rps16"] > 0 and measured["streams64"] > 0 and measured["cpu_per_1000"] > 0
    assert not any(measured["errors"].values())


def test_a_peer_that_is_not_installed_is_skipped_and_named(tmp_path):
    done = compare(tmp_path, "--targets", "litellm", XDG_CACHE_HOME=str(tmp_path / "empty-cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skipped litellm:" in done.stdout and "--install" in done.stdout
    assert "LiteLLM" not in done.stdout.split("skipped")[0]  # no row for it

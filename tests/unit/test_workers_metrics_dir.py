"""`serve --workers`: the metrics dir of a parent killed outright is swept by the next one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from proxy.workers import METRICS_PREFIX, sweep_stale_metrics_dirs


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid  # reaped: no process has it until the kernel hands the number out again


def test_a_dead_parents_dir_is_swept_and_a_live_ones_is_kept(tmp_path: Path) -> None:
    stale = tmp_path / f"{METRICS_PREFIX}{dead_pid()}-abc123"
    live = tmp_path / f"{METRICS_PREFIX}{os.getpid()}-def456"
    unnamed = tmp_path / f"{METRICS_PREFIX}xyz"  # not ours to judge: no pid in the name
    for path in (stale, live, unnamed):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"\0" * 16)

    assert sweep_stale_metrics_dirs(tmp_path) == [stale]

    assert not stale.exists()
    assert live.exists() and unnamed.exists()

"""`serve --workers N`: a parent that keeps N proxy processes serving one port, one per core.

Each worker is `agent-proxy serve` itself, bound with SO_REUSEPORT: the kernel spreads new
connections over the workers and the parent never touches a request. The parent restarts a
worker that dies (at most once per `RESTART_PAUSE_S` per slot, so a crash loop does not spin),
forwards SIGHUP (reload) and SIGTERM/SIGINT (drain) to every worker, and exits 0 once all have
drained. A worker that exits 2 (its policy, ledger or port cannot be used) stops them all: that
will not get better by restarting.

Metrics go through prometheus_client's multiprocess mode: the parent sets
`PROMETHEUS_MULTIPROC_DIR` before any worker starts, and removes a dead worker's live gauges.
See docs/workers.md for what is shared between workers and what each holds on its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxy.logs import log_event

log = logging.getLogger("agent_proxy.workers")

WORKER_ENV = "AGENT_PROXY_WORKER"  # a worker's slot number, in its environment: it binds with SO_REUSEPORT
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # the same name proxy/metrics.py reads
RESTART_PAUSE_S = 1.0
FATAL_EXIT = 2  # what `serve` exits with when its policy, ledger or listening port cannot be used
PR_SET_PDEATHSIG = 1  # prctl(2)
SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
WAKE_S = 1.0  # the parent's longest sleep between signals, to start a restart that was held back
METRICS_PREFIX = "agent-proxy-metrics-"  # then the parent's pid and a dash: a dead parent's dir is swept


@dataclass
class Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = field(default=-RESTART_PAUSE_S)


class Supervisor:
    def __init__(self, worker_argv: list[str], count: int, metrics_dir: Path):
        self.worker_argv = worker_argv
        self.metrics_dir = metrics_dir
        self.slots = [Slot(i) for i in range(count)]
        self.stopping = False
        self.exit_code = 0

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # taken one at a time below, never mid-step
        for slot in self.slots:
            self._start(slot)
        while any(slot.process is not None for slot in self.slots):
            info = signal.sigtimedwait(SIGNALS, WAKE_S)
            if info is not None:
                self._on_signal(info.si_signo)
            self._reap()
            if not self.stopping:
                for slot in self.slots:
                    if slot.process is None and time.monotonic() - slot.started_at >= RESTART_PAUSE_S:
                        self._start(slot)
        log_event(log, "all workers stopped", exit_code=self.exit_code)
        return self.exit_code

    def _start(self, slot: Slot) -> None:
        env = {**os.environ, WORKER_ENV: str(slot.index), MULTIPROC_ENV: str(self.metrics_dir)}
        # A worker must not inherit the blocked signals, nor die of a SIGHUP sent before its loop listens.
        slot.process = subprocess.Popen(self.worker_argv, env=env, preexec_fn=_worker_signals)
        slot.started_at = time.monotonic()
        log_event(log, "worker started", worker=slot.index, pid=slot.process.pid)

    def _on_signal(self, signo: int) -> None:
        if signo == signal.SIGHUP:
            self._forward(signal.SIGHUP)
        elif signo in (signal.SIGTERM, signal.SIGINT):
            if not self.stopping:
                log_event(log, "stopping: draining workers", signal=signal.Signals(signo).name)
            self.stopping = True
            self._forward(signal.SIGTERM)

    def _forward(self, signo: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signo)

    def _reap(self) -> None:
        from prometheus_client import multiprocess  # after the environment named the directory

        for slot in self.slots:
            process = slot.process
            if process is None or process.poll() is None:
                continue
            slot.process = None
            multiprocess.mark_process_dead(process.pid, str(self.metrics_dir))  # its live gauges go
            if self.stopping:
                if process.returncode != 0 and self.exit_code == 0:  # a fatal exit keeps its own code
                    self.exit_code = 1
                continue
            log_event(
                log, "worker exited", worker=slot.index, pid=process.pid, code=process.returncode, level=logging.ERROR
            )
            if process.returncode == FATAL_EXIT:
                self.exit_code = FATAL_EXIT
                self.stopping = True
                self._forward(signal.SIGTERM)


def _worker_signals() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the worker's event loop installs its own at startup
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    with contextlib.suppress(OSError, AttributeError):  # Linux: a parent killed outright still drains its workers
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_workers(count: int, policy: Path, host: str, port: int, log_level: str) -> int:
    """Blocking: supervise `count` workers until SIGTERM/SIGINT; the exit code of the whole."""
    own_dir = MULTIPROC_ENV not in os.environ
    if own_dir:
        sweep_stale_metrics_dirs(Path(tempfile.gettempdir()))
    prefix = f"{METRICS_PREFIX}{os.getpid()}-"
    metrics_dir = Path(tempfile.mkdtemp(prefix=prefix) if own_dir else os.environ[MULTIPROC_ENV])
    if not own_dir:  # files of an earlier run would be added to this one's
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
    argv = [sys.executable, "-m", "proxy", "serve", "--policy", str(policy), "--host", host, "--port", str(port)]
    argv += ["--log-level", log_level]
    log_event(log, "starting workers", workers=count, host=host, port=port, metrics_dir=str(metrics_dir))
    try:
        return Supervisor(argv, count, metrics_dir).run()
    finally:
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def sweep_stale_metrics_dirs(tmp: Path) -> list[Path]:
    """Remove the metrics dirs of parents that no longer run (killed outright, so their cleanup never ran).

    A dir is named after its parent's pid; one whose pid is alive (ours, another supervisor's, or an
    unrelated process that took the number) is left alone.
    """
    swept = []
    for path in tmp.glob(f"{METRICS_PREFIX}*-*"):
        pid = path.name[len(METRICS_PREFIX) :].partition("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        swept.append(path)
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True

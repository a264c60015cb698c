"""Running the proxy as a process: listen, reload on SIGHUP, drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from aiohttp import web

from proxy.app import HANDLER, HOLDER, METRICS, POLICY, build_app
from proxy.edge import EdgeRunner
from proxy.handler import ProxyHandler
from proxy.logs import log_event
from proxy.policy.schema import Policy

log = logging.getLogger("agent_proxy.server")


# handler_cancellation: a caller that disconnects cancels its upstream request at once.
# access_log: the proxy writes its own structured line per request.
RUNNER_OPTIONS = {"handler_cancellation": True, "access_log": None}


def make_runner(app: web.Application, shutdown_timeout: float = 30.0) -> web.AppRunner:
    """The caller's side as `server:` bounds it (proxy/edge.py): timeouts, connection caps, parser limits."""
    policy = app[POLICY][0]
    return EdgeRunner(
        app, config=policy.server, metrics=app[METRICS], shutdown_timeout=shutdown_timeout, **RUNNER_OPTIONS
    )


class ListenError(Exception):
    """The address is taken or not ours: `serve` exits 2, and `--workers` does not restart into it."""


async def serve(policy: Policy, path: Path | None, host: str, port: int, reuse_port: bool = False) -> None:
    """`reuse_port`: one of `serve --workers N`'s processes; the kernel spreads connections over them."""
    app = build_app(policy, path)
    app[METRICS].worker_started.set(time.time())
    runner = make_runner(app, policy.server.shutdown_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    holder = app[HOLDER]
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        task = loop.create_task(holder.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log_event(
        log, "listening", host=host, port=port, policy=str(path) if path else None, routes=len(holder.current.routes)
    )
    await stop.wait()
    await drain_and_stop(runner, app[HANDLER], policy.server.shutdown_timeout_s)


async def drain_and_stop(runner: web.AppRunner, handler: ProxyHandler, grace_s: float) -> None:
    """A stop under load: unready at once, no new connections, in-flight work finishes within the grace.

    Streams still going when the grace is nearly over end with the protocol's error event (never a
    cut); then aiohttp cancels what remains, and the cleanup flushes completions and the ledger.
    """
    handler.draining = True
    log_event(log, "stopping: draining in-flight requests", grace_s=grace_s)
    margin = min(1.0, grace_s / 10)
    ending = asyncio.get_running_loop().call_later(max(grace_s - margin, 0.0), handler.end_streams)
    try:
        await runner.cleanup()  # listeners closed, then in-flight requests given `grace_s`
    finally:
        ending.cancel()
    log_event(log, "stopped")


def run(policy: Policy, path: Path | None, host: str, port: int, reuse_port: bool = False) -> None:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(policy, path, host, port, reuse_port))


def _loop_factory():  # type: ignore[no-untyped-def]
    """uvloop when installed: a faster event loop for the same code."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop

"""The aiohttp application: the proxy handler, health, metrics and admin endpoints.

Resources (upstream client, policy holder and its watcher, built-in mock upstream,
background completion tasks) are created in one cleanup context and torn down in
reverse order, after in-flight work has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy.accounting.ledger import Ledger
from proxy.admin import build_admin_app
from proxy.app_keys import HANDLER, HOLDER, METRICS, POLICY, SERVICES, STARTED, TRACER_PROVIDER
from proxy.forward.transport import Transport
from proxy.handler import ProxyHandler, drain
from proxy.metrics import Metrics
from proxy.policy.reload import PolicyHolder
from proxy.policy.schema import Policy
from proxy.services import Services
from proxy.state import open_store
from proxy.tracing import Tracing
from proxy.workers import WORKER_ENV


class BuiltinMock:
    """The built-in mock upstream, started in-process on a loopback port when a policy asks."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._lock = asyncio.Lock()

    async def url(self) -> str:
        async with self._lock:
            if self._url is None:
                from proxy.mock_upstream import build_mock_app

                self._runner = web.AppRunner(build_mock_app(), access_log=None)
                await self._runner.setup()
                site = web.TCPSite(self._runner, "127.0.0.1", 0)
                await site.start()
                port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                self._url = f"http://127.0.0.1:{port}"
            return self._url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def build_app(
    policy: Policy, path: Path | None = None, metrics: Metrics | None = None, tracer_provider: Any = None
) -> web.Application:
    """`tracer_provider` replaces the one `server.tracing` would configure (tests export spans in memory)."""
    app = web.Application()
    app[POLICY] = (policy, path)
    app[TRACER_PROVIDER] = tracer_provider
    app[METRICS] = metrics or Metrics()
    app[STARTED] = time.time()
    app.cleanup_ctx.append(_resources)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.add_subapp("/admin", build_admin_app())  # never forwarded; guarded once, in the sub-application
    app.router.add_route("*", "/{tail:.*}", proxy_entry)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    policy, path = app[POLICY]
    metrics = app[METRICS]
    ledger = None
    if policy.ledger.path:  # first, and fatal if it fails: records must not vanish silently
        config = policy.ledger
        ledger = await asyncio.to_thread(
            Ledger.open, config.path, config.flush_interval_ms / 1000, metrics, config.max_queued,
            config.flush_timeout_ms / 1000,
        )  # fmt: skip
    mock = BuiltinMock()
    transport = Transport(policy.server.upstream_pool)
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    services = Services(metrics=metrics, ledger=ledger, state=open_store(policy.state, metrics), transport=transport)
    app[SERVICES] = services
    holder = await PolicyHolder.create(policy, path, services, mock.url)
    app[HOLDER] = holder
    tracing = Tracing.from_config(policy.server.tracing, app[TRACER_PROVIDER])
    app[HANDLER] = ProxyHandler(holder, transport, metrics, spawn, tracing)
    watcher = asyncio.create_task(holder.watch()) if path is not None else None
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        while tasks:  # completions (ledger records among them) before the ledger closes
            await drain(set(tasks))
        if services.ledger is not None:
            await services.ledger.close()
        await transport.close()
        if tracing is not None:  # after the completions above ended their spans
            await asyncio.to_thread(tracing.shutdown)
        await mock.stop()
        await services.caches.close()
        if services.state is not None:  # last: completions above released their slots into it
            await services.state.close()


async def proxy_entry(request: web.Request) -> web.StreamResponse:
    return await request.app[HANDLER](request)


async def healthz(request: web.Request) -> web.Response:
    if WORKER_ENV in os.environ:  # one of `serve --workers N`: which process answered this connection
        return web.json_response({"status": "ok", "worker": os.getpid()})
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    holder = request.app.get(HOLDER)
    if holder is None:
        return web.json_response({"status": "starting"}, status=503)
    if request.app[HANDLER].draining:  # stopping: take no new work
        return web.json_response({"status": "draining"}, status=503)
    body: dict[str, Any] = {"status": "ready", "policy_loaded_at": holder.current.loaded_at}
    store = request.app[SERVICES].state
    if store is not None:  # limits' shared state: with fail_closed, unreachable means limited routes answer 503
        reachable = await store.ping()
        body["state"] = {"backend": store.backend, "reachable": reachable}
        if not reachable and holder.current.policy.state.on_backend_error == "fail_closed":
            body["status"] = "state_unreachable"
            return web.json_response(body, status=503)
    return web.json_response(body)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].render()
    return web.Response(body=body, headers={"content-type": content_type})

"""The aiohttp application: the proxy handler, health, metrics and admin endpoints.

Resources (upstream client, policy holder and its watcher, built-in mock upstream,
background completion tasks) are created in one cleanup context and torn down in
reverse order, after in-flight work has drained.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.accounting.ledger import Ledger
from proxy.errors import BadRequest, NotFound, ProxyError
from proxy.exchange import Caller
from proxy.forward.headers import request_id_from
from proxy.forward.transport import Transport
from proxy.handler import ProxyHandler, drain, error_response
from proxy.metrics import Metrics
from proxy.policy.reload import PolicyHolder
from proxy.policy.schema import Policy
from proxy.protocols import PROTOCOLS
from proxy.services import Services
from proxy.state import open_store
from proxy.status_page import PAGE, status_data, wants_html
from proxy.tracing import Tracing
from proxy.workers import WORKER_ENV

POLICY = web.AppKey("policy", tuple)
METRICS = web.AppKey("metrics", Metrics)
SERVICES = web.AppKey("services", Services)
HOLDER = web.AppKey("holder", PolicyHolder)
HANDLER = web.AppKey("handler", ProxyHandler)
STARTED = web.AppKey("started", float)
TRACER_PROVIDER = web.AppKey("tracer_provider", object)

_SCRIPT = PAGE.split(b"<script>", 1)[1].split(b"</script>", 1)[0]
PAGE_HEADERS = {
    # The page runs its own inline script and fetches its own JSON; nothing else, and never in a frame.
    "content-security-policy": "default-src 'none'; connect-src 'self'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{base64.b64encode(hashlib.sha256(_SCRIPT).digest()).decode()}'; frame-ancestors 'none'",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}


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
    app.router.add_get("/admin/status", admin_status)
    app.router.add_get("/admin/usage", admin_usage)
    app.router.add_route("*", "/admin/{tail:.*}", admin_unknown)  # never forwarded; admin endpoints go above
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

    services = Services(metrics=metrics, ledger=ledger, state=open_store(policy.state, metrics))
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


async def require_admin(request: web.Request) -> Caller:
    """Admin endpoints always need a key with the `admin` scope, whatever the routes say.

    The same verifiers as the auth stage (static, HMAC, JWT), with the same refusal metrics.
    """
    return await request.app[HOLDER].current.verifier.require_scope(basic_as_bearer(request.headers), "admin")


def basic_as_bearer(headers: Mapping[str, str]) -> Mapping[str, str]:
    """A browser sends the admin key as HTTP Basic's password (any user name): read it as a bearer key."""
    given = headers.get("authorization", "")
    if given[:6].lower() != "basic ":
        return headers
    try:
        _, _, password = base64.b64decode(given[6:], validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return headers
    converted = CIMultiDict(headers)
    converted["authorization"] = f"Bearer {password}"
    return converted


async def admin_unknown(request: web.Request) -> web.Response:
    """Anything else under /admin: the admin scope first, then 404."""
    try:
        await require_admin(request)
        raise NotFound(f"no admin endpoint {request.method} {request.path}")
    except ProxyError as err:
        return error_response(PROTOCOLS["openai"], err, request_id_from(request.headers))


async def admin_status(request: web.Request) -> web.Response:
    """JSON for tools; for a browser, a page that shows the same JSON, refreshed live."""
    html = wants_html(request.headers.get("accept", ""))
    try:
        await require_admin(request)
    except ProxyError as err:
        refused = error_response(PROTOCOLS["openai"], err, request_id_from(request.headers))
        if html and err.status == 401:
            refused.headers["www-authenticate"] = 'Basic realm="agent-proxy admin", charset="UTF-8"'
        return refused
    if html:
        return web.Response(body=PAGE, content_type="text/html", headers=PAGE_HEADERS)
    status = await status_data(request.app[HOLDER], request.app[SERVICES], request.app[STARTED])
    headers = {"cache-control": "no-store"}
    return web.Response(body=orjson.dumps(status), content_type="application/json", headers=headers)


async def admin_usage(request: web.Request) -> web.Response:
    """Usage and spend from the ledger: `?since=24h&by=caller|model|route|day`."""
    from proxy.accounting.report import GROUPS, parse_since, report

    request_id = request_id_from(request.headers)
    try:
        await require_admin(request)
        ledger = request.app[SERVICES].ledger
        if ledger is None:
            raise NotFound("the ledger is disabled: set `ledger.path` in the policy", code="ledger_disabled")
        by = request.query.get("by", "caller")
        if by not in GROUPS:
            raise BadRequest(f"`by` must be one of {', '.join(GROUPS)}", code="invalid_group")
        try:
            since_s = parse_since(request.query.get("since", "24h"))
        except ValueError as exc:
            raise BadRequest(str(exc), code="invalid_since") from None
    except ProxyError as err:
        return error_response(PROTOCOLS["openai"], err, request_id)
    await ledger.flush()
    data = await asyncio.to_thread(report, ledger.path, since_s, by)
    return web.Response(body=orjson.dumps(data), content_type="application/json")

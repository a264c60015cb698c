"""The admin endpoints, in a sub-application mounted at /admin and guarded once.

Every request under /admin needs a key with the `admin` scope, whatever the routes say:
the same verifiers as the auth stage (static, HMAC, JWT), with the same refusal metrics.
A browser may send the key as HTTP Basic's password; asking for HTML, it is told to.
Nothing under /admin is ever forwarded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.app_keys import HOLDER, SERVICES, STARTED
from proxy.caller_request import error_response
from proxy.errors import BadRequest, NotFound, ProxyError
from proxy.forward.headers import request_id_from
from proxy.host_check import refused as host_refused
from proxy.protocols import PROTOCOLS
from proxy.status_page import PAGE, status_data, wants_html

_SCRIPT = PAGE.split(b"<script>", 1)[1].split(b"</script>", 1)[0]
PAGE_HEADERS = {
    # The page runs its own inline script and fetches its own JSON; nothing else, and never in a frame.
    "content-security-policy": "default-src 'none'; connect-src 'self'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{base64.b64encode(hashlib.sha256(_SCRIPT).digest()).decode()}'; frame-ancestors 'none'",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_admin_app() -> web.Application:
    admin = web.Application(middlewares=[admin_only])
    admin.router.add_get("/status", admin_status)
    admin.router.add_get("/usage", admin_usage)
    admin.router.add_route("*", "/{tail:.*}", admin_unknown)
    return admin


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


@web.middleware
async def admin_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        current = request.config_dict[HOLDER].current
        if header := current.host_rules.refusal(request.headers.get("Host"), request.headers.get("Origin")):
            metrics = request.config_dict[SERVICES].metrics
            metrics.child(metrics.host_refusals, "admin", header).inc()
            raise host_refused(header)  # DNS rebinding or a cross-site page (proxy/host_check.py)
        await current.verifier.require_scope(basic_as_bearer(request.headers), "admin")
        return await handler(request)
    except ProxyError as err:
        refused = error_response(PROTOCOLS["openai"], err, request_id_from(request.headers))
        if err.status == 401 and wants_html(request.headers.get("accept", "")):
            refused.headers["www-authenticate"] = 'Basic realm="agent-proxy admin", charset="UTF-8"'
        return refused


async def admin_unknown(request: web.Request) -> web.Response:
    raise NotFound(f"no admin endpoint {request.method} {request.path}")


async def admin_status(request: web.Request) -> web.Response:
    """JSON for tools; for a browser, a page that shows the same JSON, refreshed live."""
    if wants_html(request.headers.get("accept", "")):
        return web.Response(body=PAGE, content_type="text/html", headers=PAGE_HEADERS)
    config = request.config_dict
    status = await status_data(config[HOLDER], config[SERVICES], config[STARTED])
    headers = {"cache-control": "no-store"}
    return web.Response(body=orjson.dumps(status), content_type="application/json", headers=headers)


async def admin_usage(request: web.Request) -> web.Response:
    """Usage and spend from the ledger: `?since=24h&by=caller|model|route|day`."""
    from proxy.accounting.report import GROUPS, parse_since, report

    ledger = request.config_dict[SERVICES].ledger
    if ledger is None:
        raise NotFound("the ledger is disabled: set `ledger.path` in the policy", code="ledger_disabled")
    by = request.query.get("by", "caller")
    if by not in GROUPS:
        raise BadRequest(f"`by` must be one of {', '.join(GROUPS)}", code="invalid_group")
    try:
        since_s = parse_since(request.query.get("since", "24h"))
    except ValueError as exc:
        raise BadRequest(str(exc), code="invalid_since") from None
    await ledger.flush()
    data = await asyncio.to_thread(report, ledger.path, since_s, by)
    return web.Response(body=orjson.dumps(data), content_type="application/json")

"""Application assembly: request recording, fault injection, routing, and the CLI runner."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from . import anthropic_api, openai_api, openai_extra
from .behaviour import FAULTS, MockBehaviour, RecordedRequest
from .wire import (
    BEHAVIOUR_KEY,
    EVENT_INTERVAL_KEY,
    FAULT_KEY,
    REQUEST_ID_KEY,
    WORDS_KEY,
    MockBadRequest,
    behaviour_of,
    error_response,
    hang,
    reset_connection,
    respond_json,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATUS_FAULTS: dict[str, int] = {"status_500": 500, "status_429": 429, "status_503": 503}
RETRY_AFTER_STATUSES = frozenset({429, 503})
ECHO_HIDDEN_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding"}
)


def _record(request: web.Request, body: bytes, behaviour: MockBehaviour) -> None:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    behaviour.requests.append(RecordedRequest(request.method, request.path, headers, body, dict(request.query)))


def _header_fault(request: web.Request) -> str | None:
    fault = request.headers.get("x-mock-fault")
    if fault is not None and fault not in FAULTS:
        raise MockBadRequest(f"Unknown x-mock-fault {fault!r}; expected one of {sorted(FAULTS)}.")
    return fault


def _number_header(request: web.Request, name: str, default: float, kind: type[float] | type[int]) -> Any:
    raw = request.headers.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise MockBadRequest(f"Header {name} must be a number, got {raw!r}.") from None
    if value < 0:
        raise MockBadRequest(f"Header {name} must not be negative.")
    return value


async def _apply_fault(request: web.Request, fault: str | None, behaviour: MockBehaviour) -> web.StreamResponse | None:
    """Faults that replace the answer return a response; the rest shape it later (or only delay it)."""
    delay = _number_header(request, "x-mock-delay-s", behaviour.delay_s, float)
    if fault == "slow_first_byte" or "x-mock-delay-s" in request.headers:
        await asyncio.sleep(delay)
    if fault in STATUS_FAULTS:
        status = STATUS_FAULTS[fault]
        retry = behaviour.retry_after if status in RETRY_AFTER_STATUSES else None
        headers = {"retry-after": retry} if retry is not None else None
        return error_response(request, status, f"Mock fault injected: {fault}", headers)
    if fault == "hang":
        return await hang(request)
    if fault == "reset":
        return reset_connection(request)
    return None


@web.middleware
async def mock_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record first so even faulted or malformed requests are visible to assertions."""
    behaviour = behaviour_of(request)
    _record(request, await request.read(), behaviour)
    request[REQUEST_ID_KEY] = f"req_mock{behaviour.next_id():06d}"
    try:
        request[WORDS_KEY] = _number_header(request, "x-mock-reply-words", behaviour.reply_words, int)
        request[EVENT_INTERVAL_KEY] = _number_header(request, "x-mock-event-interval-ms", 0.0, float) / 1000
        fault = _header_fault(request) or behaviour.take_fault()
        request[FAULT_KEY] = fault
        early = await _apply_fault(request, fault, behaviour)
        return early if early is not None else await handler(request)
    except MockBadRequest as exc:
        return error_response(request, 400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, exc.status, f"{exc.reason}: {request.method} {request.path}")


async def tool_echo(request: web.Request) -> web.StreamResponse:
    """Stand-in for a plain HTTP tool, echoing what arrived so tool-traffic rewriting is observable."""
    raw = await request.read()
    try:
        body: Any = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = raw.decode(errors="replace")
    headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in ECHO_HIDDEN_HEADERS}
    payload = {"method": request.method, "path": request.path, "query": dict(request.query), "body": body}
    return await respond_json(request, {**payload, "headers": headers})


def build_mock_app(behaviour: MockBehaviour | None = None) -> web.Application:
    """A fresh app; pass a behaviour to keep a handle on it for fault injection and assertions."""
    app = web.Application(middlewares=[mock_middleware], client_max_size=64 * 1024**2)
    app[BEHAVIOUR_KEY] = behaviour if behaviour is not None else MockBehaviour()
    app.router.add_post("/v1/chat/completions", openai_api.chat_completions)
    app.router.add_post("/v1/completions", openai_api.completions)
    app.router.add_post("/v1/responses", openai_extra.responses)
    app.router.add_post("/v1/embeddings", openai_extra.embeddings)
    app.router.add_get("/v1/models", openai_extra.models)
    app.router.add_post("/v1/messages", anthropic_api.messages)
    app.router.add_post("/v1/messages/count_tokens", anthropic_api.count_tokens_endpoint)
    app.router.add_get("/tools/echo/{tail:.*}", tool_echo)
    app.router.add_post("/tools/echo/{tail:.*}", tool_echo)
    return app


async def run_mock_upstream(host: str = "127.0.0.1", port: int = 9999) -> None:
    """Serve until cancelled; a short shutdown timeout keeps Ctrl-C snappy despite hanging faults."""
    runner = web.AppRunner(build_mock_app(), shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("mock upstream listening on http://%s:%d", host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()

"""HTTP plumbing shared by both protocols: JSON/SSE writers, error shapes and fault effects."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from .behaviour import MockBehaviour
from .text import answer_words, word_deltas

BEHAVIOUR_KEY: web.AppKey[MockBehaviour] = web.AppKey("mock_behaviour", MockBehaviour)
FAULT_KEY: web.RequestKey[str | None] = web.RequestKey("mock_fault", str)
WORDS_KEY: web.RequestKey[int] = web.RequestKey("mock_reply_words", int)
EVENT_INTERVAL_KEY: web.RequestKey[float] = web.RequestKey("mock_event_interval_s", float)
REQUEST_ID_KEY: web.RequestKey[str] = web.RequestKey("mock_request_id", str)

CUT_AFTER_EVENTS = 2
HANG_S = 3600.0
DISCONNECT_POLL_S = 0.05
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    503: ("server_error", "service_unavailable"),
}
_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
}


class MockBadRequest(Exception):
    """Raised by handlers for malformed input; rendered as a protocol-shaped 400."""


REPLY_TEXT_HEADER = "x-mock-reply-text"


def answer_pieces(request: web.Request, prompt: str) -> list[str]:
    """A text answer's streamed pieces: from `x-mock-reply-text` if sent (a JSON string, split at words, or a JSON
    list of the exact deltas), else the usual echo of the prompt."""
    raw = request.headers.get(REPLY_TEXT_HEADER)
    if raw is None:
        return word_deltas(answer_words(prompt, request[WORDS_KEY]))
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MockBadRequest(f"Header {REPLY_TEXT_HEADER} must be JSON: a string or a list of strings.") from None
    if isinstance(value, str):
        return re.findall(r"\s*\S+|\s+$", value)
    if isinstance(value, list) and all(isinstance(piece, str) for piece in value):
        return value
    raise MockBadRequest(f"Header {REPLY_TEXT_HEADER} must be a JSON string or a list of strings.")


def behaviour_of(request: web.Request) -> MockBehaviour:
    return request.config_dict[BEHAVIOUR_KEY]


def is_anthropic(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def error_payload(path: str, status: int, message: str) -> dict[str, Any]:
    """The error body a real server of that protocol would send for ``status``."""
    if is_anthropic(path):
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind, code = _OPENAI_ERRORS.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_response(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(error_payload(request.path, status, message)),
        content_type="application/json",
        headers={**id_headers(request), **(headers or {})},
    )


def id_headers(request: web.Request) -> dict[str, str]:
    """SDKs surface these as ``_request_id``; a proxy may log or forward them."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is None:
        return {}
    return {"request-id" if is_anthropic(request.path) else "x-request-id": request_id}


def read_json(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MockBadRequest(f"Invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise MockBadRequest("Request body must be a JSON object")
    return data


def require(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if value is None:
        raise MockBadRequest(f"Missing required parameter: '{name}'.")
    if not isinstance(value, kind):
        raise MockBadRequest(f"Invalid type for parameter '{name}'.")
    return value


def sse_frame(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


async def respond_json(request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
    """A 200 JSON answer, or under cut_stream the headers and half the body, then EOF."""
    body = orjson.dumps(payload)
    headers = {"Content-Type": "application/json", **id_headers(request)}
    if request.get(FAULT_KEY) != "cut_stream":
        return web.Response(body=body, headers=headers)
    resp = web.StreamResponse(headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    await resp.write(body[: len(body) // 2])
    close_connection(request)
    return resp


async def respond_sse(request: web.Request, frames: Iterable[bytes]) -> web.StreamResponse:
    """Write each event as its own chunk so clients observe them as they are produced.

    With an event interval (`x-mock-event-interval-ms`), events are paced as a model generating
    tokens would send them; without one, the whole stream goes out in one burst.
    """
    resp = web.StreamResponse(headers={**SSE_HEADERS, **id_headers(request)})
    await resp.prepare(request)
    cut = request.get(FAULT_KEY) == "cut_stream"
    interval = request.get(EVENT_INTERVAL_KEY, 0.0)
    for index, frame in enumerate(frames):
        if cut and index == CUT_AFTER_EVENTS:
            close_connection(request)
            return resp
        if interval and index:
            await asyncio.sleep(interval)
        await resp.write(frame)
    await resp.write_eof()
    return resp


def close_connection(request: web.Request) -> None:
    """Graceful FIN after flushing, so the client keeps what was sent but sees a truncated body."""
    if request.transport is not None:
        request.transport.close()


def reset_connection(request: web.Request) -> web.Response:
    """Send a TCP RST with no response; the returned object never reaches the wire."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response()


async def hang(request: web.Request) -> web.Response:
    """Never answer, but stop once the client gives up so server shutdown stays quick."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    while loop.time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        await asyncio.sleep(DISCONNECT_POLL_S)
    return web.Response()

"""What the handler reads from a caller's request, and how it answers one it cannot take.

The body is read whole within its size and time bounds; the query string is taken byte for
byte from the request target; a request no route matches is answered in the shape the
caller's SDK understands.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from proxy.errors import MalformedRequest, PayloadTooLarge, ProxyError, RequestTimeout
from proxy.protocols import PROTOCOLS, Protocol

JSON = "application/json"


def guess_protocol(request: web.Request) -> Protocol:
    """For requests no route matched: answer in the shape the caller's SDK understands."""
    if "anthropic-version" in request.headers or request.path.startswith("/v1/messages"):
        return PROTOCOLS["anthropic"]
    return PROTOCOLS["openai"]


def error_response(protocol: Protocol, err: ProxyError, request_id: str) -> web.Response:
    headers = {"x-request-id": request_id, **err.headers}
    return web.Response(status=err.status, body=protocol.error_body(err), content_type=JSON, headers=headers)


def unsafe_path(path: str) -> bool:
    """Dot segments would let a caller climb out of a route's prefix on the upstream."""
    return "/." in path and any(segment in (".", "..") for segment in path.split("/"))


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, at most `limit` bytes, within `timeout_s` (`server.request_body_timeout_s`)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    if not request.body_exists:
        return b""
    content = request.content
    try:
        if content.is_eof():  # the whole body came with the head (a usual prompt): no wait, so no timer to arm
            body = content.read_nowait()
            if len(body) > limit:
                raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
            return body
        async with asyncio.timeout(timeout_s):
            chunks: list[bytes] = []
            size = 0
            while chunk := await content.readany():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except TimeoutError:
        raise RequestTimeout("the request body did not arrive in time", code="request_timeout") from None
    except HttpProcessingError:  # bad chunking or a short body: aiohttp's message quotes the bytes, so it is dropped
        raise MalformedRequest("the request body is not valid HTTP framing", code="malformed_request") from None


def raw_query(request: web.Request) -> str | None:
    """The query string byte for byte as the caller sent it: forwarded as is, never decoded and encoded again.

    aiohttp's parser has refused spaces and line breaks in the request line already; anything else
    outside printable ASCII must have been percent-encoded by the caller (None: it was not).
    """
    target = request.raw_path  # the request target as it came: path and query, still percent-encoded
    query = target.partition("?")[2] if target.startswith("/") else request.rel_url.raw_query_string
    if query and (not query.isascii() or any(ord(c) < 0x21 or c == "\x7f" for c in query)):
        return None
    return query


def is_json_content_type(request: web.Request) -> bool:
    ctype = request.content_type
    return ctype == JSON or ctype.endswith("+json")

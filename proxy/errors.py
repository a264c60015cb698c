"""The one exception tree of the proxy.

Every failure the proxy reports to a caller is a `ProxyError`. It carries the HTTP
status, where the fault lies (`source`) and whether forwarding may try again
(`retryable`). Protocol adapters render it once, in the route's own error shape, so
SDKs raise their usual exceptions. Foreign exceptions are mapped at the boundary
(upstream.py), never deep inside stages.
"""

from __future__ import annotations

from typing import ClassVar, Literal

Source = Literal["caller", "upstream", "internal"]


class ProxyError(Exception):
    """Base class; `kind` is the protocol-neutral error name adapters map to their own."""

    status: ClassVar[int] = 500
    kind: ClassVar[str] = "internal"
    source: ClassVar[Source] = "internal"
    retryable: ClassVar[bool] = False
    closes_connection: ClassVar[bool] = False
    """The caller's connection is closed after this answer: what it sent next cannot be trusted."""

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.reason: str | None = None  # a precise reason for logs and metrics, when `code` is deliberately vague


class BadRequest(ProxyError):
    status, kind, source = 400, "invalid_request", "caller"


class MalformedRequest(BadRequest):
    """HTTP the parser refused (head or body framing); never echoed back or logged."""

    closes_connection = True


class RequestTimeout(ProxyError):
    """The caller did not send its request head or body in time (`server.request_*_timeout_s`)."""

    status, kind, source = 408, "invalid_request", "caller"
    closes_connection = True


class Unauthorized(ProxyError):
    status, kind, source = 401, "authentication", "caller"


class Forbidden(ProxyError):
    status, kind, source = 403, "permission", "caller"


class NotFound(ProxyError):
    status, kind, source = 404, "not_found", "caller"


class PayloadTooLarge(ProxyError):
    status, kind, source = 413, "request_too_large", "caller"


class UnsupportedMediaType(ProxyError):
    status, kind, source = 415, "invalid_request", "caller"


class RateLimited(ProxyError):
    status, kind, source = 429, "rate_limit", "caller"


class QuotaExceeded(RateLimited):
    """Over a spend budget: providers call it `insufficient_quota`, and waiting a minute does not help."""

    kind = "insufficient_quota"


class InternalError(ProxyError):
    status, kind, source = 500, "internal", "internal"


class UpstreamUnreachable(ProxyError):
    """The upstream could not be connected to, or dropped the connection before answering."""

    status, kind, source, retryable = 502, "upstream", "upstream", True


class ServiceUnavailable(ProxyError):
    status, kind, source, retryable = 503, "unavailable", "internal", True


class UpstreamTimeout(ProxyError):
    status, kind, source, retryable = 504, "timeout", "upstream", True


class UpstreamStreamBroken(ProxyError):
    """The upstream failed after the first byte went to the caller: only the stream can end."""

    status, kind, source = 502, "upstream", "upstream"


class UpstreamProtocolError(UpstreamUnreachable):
    """The upstream's answer head was not one a proxy can pass on: too large, malformed, or an upgrade.

    Retried like a connection closed before answering: the request may have been processed.
    """

    kind = "upstream_protocol"


class UpstreamLimitExceeded(UpstreamStreamBroken):
    """An upstream answer went past a bound of the policy (body, event, inflation, total bytes).

    Before the first byte went to the caller it is a 502; after, the stream ends with the error event.
    """

    kind = "upstream_limit"


class ShuttingDown(UpstreamStreamBroken):
    """The proxy is stopping and its grace is over: a stream still going ends with the protocol's error event."""

    status, kind, source = 503, "unavailable", "internal"

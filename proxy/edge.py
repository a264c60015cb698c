"""The caller's side of the server: aiohttp parses HTTP, the proxy bounds it and answers in JSON.

aiohttp's server parses every caller's bytes (a maintained parser owns that security boundary);
this module hooks it at its narrowest points, one `RequestHandler` per connection:

- connection caps: `connection_made` counts the connection and closes it at once past
  `server.max_connections`, or past `server.max_unauthenticated_connections` while no request on it
  has been identified (`mark_identified`), so a flood of idle sockets never starves identified callers;
- the request-head timer: armed at the connection's start and at the first byte of each keep-alive
  request (`data_received`), disarmed when aiohttp hands over a whole head (the request factory); when
  it fires, a 408 goes out if part of a head came, and the connection is closed. It is one loop timer
  per connection that moves on lazily: arming and disarming store a deadline, so a request on a kept-alive
  connection does not make and cancel a timer before its handler runs. Idle keep-alive
  connections are aiohttp's own `keepalive_timeout` (`server.keepalive_s`);
- malformed HTTP: `handle_error` answers a JSON 400 that echoes nothing and logs one structured line
  (kind, peer, request id), never the bytes, a header value or a traceback; a framing error inside a
  body (bad chunking) is handed to the request reading that body, which answers in its route's shape.

Every close is counted in `agent_proxy_caller_connections_closed_total{reason}`.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler

from proxy.errors import InternalError, MalformedRequest, ProxyError, RequestTimeout, UpstreamTimeout
from proxy.forward.headers import new_request_id
from proxy.logs import log_event
from proxy.metrics import Metrics
from proxy.policy.schema import ServerConfig
from proxy.protocols import PROTOCOLS

log = logging.getLogger("agent_proxy.edge")

# Connection phases: the head timer runs in NEW and HEAD; IDLE is aiohttp's keep-alive wait.
_NEW, _IDLE, _HEAD, _BUSY = range(4)


def json_error(err: ProxyError) -> bytes:
    """No route is known before a head parses: plain JSON, in the OpenAI shape most SDKs read."""
    return PROTOCOLS["openai"].error_body(err)


def _raw_response(err: ProxyError, request_id: str) -> bytes:
    """A whole response written straight to the transport, for when no request object exists."""
    body = json_error(err)
    head = (
        f"HTTP/1.1 {err.status} {HTTPStatus(err.status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\nx-request-id: {request_id}\r\n\r\n"
    )
    return head.encode() + body


def _peer(handler: RequestHandler) -> str | None:
    peer = handler.peername
    return str(peer[0])[:64] if isinstance(peer, tuple) and peer else None


class EdgeServer(web.Server):
    """aiohttp's connection factory, making EdgeHandlers and counting what they hold."""

    def __init__(
        self,
        handler: Any,
        *,
        config: ServerConfig,
        metrics: Metrics,
        loop: asyncio.AbstractEventLoop,
        request_factory: Any = None,
        handler_cancellation: bool = False,
        **handler_kwargs: Any,
    ) -> None:
        handler_kwargs.update(
            keepalive_timeout=config.keepalive_s,
            max_line_size=config.max_header_bytes,
            max_field_size=config.max_header_bytes,
            max_headers=config.max_headers,
        )
        super().__init__(
            handler,
            request_factory=request_factory,
            handler_cancellation=handler_cancellation,
            loop=loop,
            **handler_kwargs,
        )
        self.config = config
        self.metrics = metrics
        self._event_loop = loop
        self._handler_kwargs = handler_kwargs
        self.open = 0
        self.unidentified = 0
        inner = self.request_factory

        def request_factory_hook(message: Any, payload: StreamReader, protocol: Any, writer: Any, task: Any) -> Any:
            # aiohttp calls the request factory when it starts on a whole head (a malformed one included): the
            # narrowest public point at which "the head has arrived" is known.
            if isinstance(protocol, EdgeHandler):
                protocol.head_arrived(payload)
            return inner(message, payload, protocol, writer, task)

        self.request_factory = request_factory_hook
        self._gauges()

    def __call__(self) -> RequestHandler:
        return EdgeHandler(self, loop=self._event_loop, **self._handler_kwargs)

    def admit(self) -> str | None:
        """None, or why a new connection is refused."""
        if self.open >= self.config.max_connections:
            return "connection_cap"
        if self.unidentified >= self.config.max_unauthenticated_connections:
            return "unauthenticated_cap"
        self.open += 1
        self.unidentified += 1
        self._gauges()
        return None

    def identified(self) -> None:
        self.unidentified -= 1
        self._gauges()

    def release(self, identified: bool) -> None:
        self.open -= 1
        if not identified:
            self.unidentified -= 1
        self._gauges()

    def count_closed(self, reason: str) -> None:
        self.metrics.child(self.metrics.caller_connections_closed, reason).inc()

    def _gauges(self) -> None:
        m = self.metrics
        m.child(m.caller_connections, "authenticated").set(self.open - self.unidentified)
        m.child(m.caller_connections, "unauthenticated").set(self.unidentified)


class EdgeHandler(RequestHandler):
    """One caller connection: aiohttp's handler with the proxy's caps, head timer and error answers."""

    def __init__(self, manager: EdgeServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._edge = manager  # aiohttp drops its own reference (`_manager`) when the connection is lost
        self._event_loop: asyncio.AbstractEventLoop = kwargs["loop"]
        self._phase = _NEW
        self._admitted = False
        self._identified = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_timer_at = 0.0  # loop time the pending timer fires at
        self._head_deadline: float | None = None  # loop time the head must be whole by; None: disarmed
        self._body: StreamReader | None = None

    # ---- connection caps

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        refused = self._edge.admit()
        if refused is not None:
            self._edge.count_closed(refused)
            self.force_close()  # start() sees it before reading anything
            return
        self._admitted = True
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        if self._head_timer is not None:  # nothing left to time: the handle (and this protocol) goes now
            self._head_timer.cancel()
            self._head_timer = None
        if self._admitted:
            self._admitted = False
            self._edge.release(self._identified)
        super().connection_lost(exc)

    def identified(self) -> None:
        """A request on this connection was identified: it no longer counts as unauthenticated."""
        if self._admitted and not self._identified:
            self._identified = True
            self._edge.identified()

    # ---- the request-head timer

    def data_received(self, data: bytes) -> None:
        if data and self._phase in (_NEW, _IDLE):
            if self._phase == _IDLE:
                self._arm_head_timer()
            self._phase = _HEAD
        super().data_received(data)
        body = self._body
        if body is not None and not body.is_eof() and self._parse_failed():
            # A framing error inside a body (bad chunking): aiohttp queues a 400 for after the current request
            # and leaves that request's body waiting forever; the request reading it gets the error instead.
            body.set_exception(BadHttpMessage("malformed request body"))

    def _parse_failed(self) -> bool:
        # aiohttp queues a parse error as an `_ErrInfo` message (an `exc` attribute) on `_messages`, a private
        # deque read here because no public hook says "the parser failed mid-body";
        # tests/e2e/test_caller_edge.py::test_bad_chunking_answers_in_the_route_shape fails if that changes.
        messages = self._messages
        return bool(messages) and isinstance(getattr(messages[-1][0], "exc", None), HttpProcessingError)

    def head_arrived(self, payload: StreamReader) -> None:
        self._phase = _BUSY
        self._disarm_head_timer()
        self._body = payload if payload is not EMPTY_PAYLOAD else None

    def log_access(self, request: web.BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        # Called by aiohttp after every response it finishes: the connection is idle again.
        super().log_access(request, response, time)
        self._phase = _IDLE
        self._body = None

    def _arm_head_timer(self) -> None:
        loop = self._event_loop
        self._head_deadline = deadline = loop.time() + self._edge.config.request_head_timeout_s
        timer = self._head_timer
        if timer is not None and self._head_timer_at <= deadline:
            return  # it fires first, then waits on to the deadline
        if timer is not None:  # a reload shortened the timeout
            timer.cancel()
        self._head_timer_at = deadline
        self._head_timer = loop.call_at(deadline, self._head_timer_fired)

    def _disarm_head_timer(self) -> None:
        self._head_deadline = None  # a pending timer finds nothing to do

    def _head_timer_fired(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None:
            return
        loop = self._event_loop
        if loop.time() < deadline:  # the head being waited for came later than the one the timer was set for
            self._head_timer_at = deadline
            self._head_timer = loop.call_at(deadline, self._head_timer_fired)
            return
        self._head_deadline = None
        self._head_timed_out()

    def _head_timed_out(self) -> None:
        transport = self.transport
        if self._phase == _BUSY or transport is None:
            return
        request_id = new_request_id()
        if self._phase == _HEAD:  # part of a head came: the caller can still be told
            err = RequestTimeout("the request head did not arrive in time", code="request_timeout")
            transport.write(_raw_response(err, request_id))
        self._edge.count_closed("head_timeout")
        log_event(
            log,
            "caller connection closed",
            logging.INFO,
            reason="head_timeout",
            partial_head=self._phase == _HEAD,
            peer=_peer(self),
            request_id=request_id,
        )
        self.force_close()

    # ---- aiohttp's own error paths

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a head it could not parse (400), or to a handler's exception (500, 504).

        aiohttp's own logs the exception with a traceback and answers in plain text, both quoting the
        caller's bytes; here the kind of error, the peer and a request id are logged, and the answer is JSON.
        """
        request_id = new_request_id()
        err: ProxyError
        if status == 400:
            err = MalformedRequest("the request is not valid HTTP", code="malformed_request")
            self._edge.count_closed("malformed")
        elif status == 504:
            err = UpstreamTimeout("the request timed out")
        else:
            err = InternalError("the proxy failed to handle this request")
        log_event(
            log,
            "malformed request" if status == 400 else "request failed",
            logging.WARNING,
            kind=type(exc).__name__ if exc is not None else None,
            status=err.status,
            peer=_peer(self),
            request_id=request_id,
        )
        if request.writer.output_size > 0:  # as aiohttp: part of an answer went out, the connection is broken
            raise ConnectionError("a response was already started")
        headers = {"x-request-id": request_id, "content-type": "application/json"}
        response = web.Response(status=err.status, body=json_error(err), headers=headers)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's other error logs: the exception's type only (its text and traceback may quote the caller)."""
        exc = kw.get("exc_info")
        kind = type(exc).__name__ if isinstance(exc, BaseException) else None
        log_event(log, "server error", logging.ERROR, kind=kind, peer=_peer(self))


def mark_identified(request: web.BaseRequest) -> None:
    """The request's caller was identified (or its route needs no identity): lift its connection off the cap."""
    protocol = request.protocol
    if isinstance(protocol, EdgeHandler):
        protocol.identified()


class EdgeRunner(web.AppRunner):
    """An AppRunner whose server makes EdgeHandlers."""

    def __init__(self, app: web.Application, *, config: ServerConfig, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._edge_config = config
        self._edge_metrics = metrics

    async def _make_server(self) -> web.Server:
        # Overrides BaseRunner's abstract factory (private): AppRunner's builds a plain `Server` around the app's
        # handler and request factory; the same server is rebuilt as an EdgeServer from its public attributes and
        # its handler arguments (`_kwargs`, private). tests/e2e/test_caller_edge.py::test_runner_builds_edge_handlers
        # fails if either changes.
        base = await super()._make_server()
        return EdgeServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=asyncio.get_running_loop(),
            config=self._edge_config,
            metrics=self._edge_metrics,
            **base._kwargs,
        )

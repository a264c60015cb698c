"""The one proxy handler: match a route, run the chain, forward, stream back.

This is the filter manager: it drives the stage hooks in order, owns the response
writer, and guarantees that completion (stage `on_complete`, metrics, the log line)
runs exactly once for every request, whether it succeeded, was answered locally,
failed, or the caller went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from proxy.caller_request import (
    JSON,
    error_response,
    guess_protocol,
    is_json_content_type,
    raw_query,
    read_body,
    unsafe_path,
)
from proxy.edge import mark_identified
from proxy.errors import (
    BadRequest,
    InternalError,
    NotFound,
    ProxyError,
    ShuttingDown,
    UnsupportedMediaType,
    UpstreamStreamBroken,
)
from proxy.exchange import Exchange, Outcome, Reply
from proxy.forward.attempts import forward, short_body
from proxy.forward.headers import caller_response_headers, request_id_from
from proxy.forward.response import UpstreamResponse
from proxy.forward.session_order import SessionOrder
from proxy.forward.transport import Transport
from proxy.heap_trim import HeapTrimmer
from proxy.host_check import refused as host_refused
from proxy.logs import log_request
from proxy.metrics import Metrics, status_class
from proxy.pipeline import ChainRun, decision_label
from proxy.policy.reload import PolicyHolder
from proxy.policy.schema import ServerConfig
from proxy.protocols.sse import SSEDecoder, SSEEvent, encode
from proxy.tracing import Tracing

log = logging.getLogger("agent_proxy.handler")

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class EventStreamResponse(web.StreamResponse):
    """A stream whose head waits for the first write, so the head and the first event share one packet.

    (`web.Response` does the same for whole bodies.) The handler writes nothing (`write(b"")`) to
    send the head alone when no event came with the upstream's head.
    """

    _send_headers_immediately = False


class ProxyHandler:
    def __init__(
        self, holder: PolicyHolder, transport: Transport, metrics: Metrics, spawn: Spawn, tracing: Tracing | None = None
    ):
        self.holder = holder
        self.transport = transport
        self.tracing = tracing
        self.draining = False  # stopping: /readyz says so at once
        self._streams: set[UpstreamResponse] = set()  # streams being relayed, ended cleanly if the grace runs out
        self.metrics = metrics
        self.spawn = spawn
        self.trimmer = HeapTrimmer()
        self.order = SessionOrder()  # MCP: a session's GET stream reaches the upstream before its later requests

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        policy = self.holder.current  # read once: an in-flight request keeps its policy
        request_id = request_id_from(request.headers)
        path = request.path
        route = policy.match(path, request.method)
        query = raw_query(request)
        if route is None or unsafe_path(path) or query is None:
            err = (
                NotFound(f"no route for {request.method} {path}")
                if route is None
                else BadRequest("the request path may not contain '.' or '..' segments")
                if query is not None
                else BadRequest("the query string has characters that must be percent-encoded", code="invalid_query")
            )
            self.metrics.child(self.metrics.requests, "unmatched", "none", status_class(err.status)).inc()
            return error_response(guess_protocol(request), err, request_id)
        refused = route.host_rules.refusal(request.headers.get("Host"), request.headers.get("Origin"))
        if refused is not None:  # DNS rebinding or a cross-site page (proxy/host_check.py)
            self.metrics.child(self.metrics.host_refusals, route.label, refused).inc()
            self.metrics.child(self.metrics.requests, route.label, "none", "4xx").inc()
            return error_response(route.protocol, host_refused(refused), request_id)

        ex = Exchange(
            request_id=request_id,
            method=request.method,
            path=path,
            raw_path=request.rel_url.raw_path,
            peer=request.remote if route.forwarded_headers == "append" else None,
            query_string=query,
            headers=request.headers,
            route=route,
            protocol=route.protocol,
        )
        if self.tracing is not None:
            ex.trace = self.tracing.start(ex)
        self.order.arrived(ex)  # before anything awaits: a session's GET keeps its place ahead of later requests
        run = route.chain.start()
        self.metrics.in_flight.inc()
        try:
            return await self._handle(request, ex, run, policy.policy.server)
        except asyncio.CancelledError:
            ex.outcome = Outcome.CLIENT_GONE
            raise
        except Exception:  # a bug must not take the process down, nor leak details
            log.exception("unexpected error", extra={"fields": {"request_id": request_id}})
            ex.error, ex.outcome = InternalError("the proxy failed to handle this request"), Outcome.ERROR
            ex.status = 500
            return error_response(ex.protocol, ex.error, request_id)
        finally:
            self.order.opened(ex)
            self.metrics.in_flight.dec()
            self._finish(ex, run)

    async def _handle(
        self, request: web.Request, ex: Exchange, run: ChainRun, server: ServerConfig
    ) -> web.StreamResponse:
        try:
            reply = await run.request_headers(ex)
            if ex.caller is not None or not ex.route.auth_required:
                mark_identified(request)  # the connection no longer counts against the unauthenticated cap
            if reply is None:
                ex.body = await read_body(request, server.max_body_bytes, server.request_body_timeout_s)
                if ex.has_llm_body:
                    if not is_json_content_type(request):
                        raise UnsupportedMediaType("the request body must be JSON (content-type: application/json)")
                    if not isinstance(ex.request_json, dict):
                        raise BadRequest("the request body must be a JSON object")
                reply = await run.request_body(ex)
            if reply is not None:
                return self._local_reply(ex, run, reply)
            return await self._forward(request, ex, run)
        except ProxyError as err:
            ex.error, ex.outcome, ex.status = err, Outcome.ERROR, err.status
            response = error_response(ex.protocol, err, ex.request_id)
            if err.closes_connection:
                await self._answer_and_close(request, response, err)
            return response

    async def _answer_and_close(self, request: web.Request, response: web.Response, err: ProxyError) -> None:
        """The caller's connection cannot carry another request (a body that timed out or broke its framing):
        the answer goes out, then the connection is closed, without aiohttp's lingering read of the rest."""
        reason = "body_timeout" if err.status == 408 else "malformed"
        self.metrics.child(self.metrics.caller_connections_closed, reason).inc()
        response.force_close()
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            await response.write_eof()
        request.protocol.force_close()

    def _local_reply(self, ex: Exchange, run: ChainRun, reply: Reply) -> web.Response:
        """An answer the proxy gives itself (a cache hit, a degraded reply) still carries what the stages that
        admitted the request say of it: rate-limit headers, truncation, the cache's verdict."""
        ex.status, ex.outcome = reply.status, Outcome.LOCAL_REPLY
        ex.response_headers = CIMultiDict({"content-type": JSON, **reply.headers})
        run.response_headers(ex)
        ex.response_headers["x-request-id"] = ex.request_id
        return web.Response(status=reply.status, body=reply.body, headers=ex.response_headers)

    def end_streams(self) -> None:
        """The stop's grace is over: each stream still relayed ends with the protocol's error event, not a cut."""
        for response in list(self._streams):
            response.abort(ShuttingDown("the proxy is shutting down", code="proxy_shutting_down"))

    async def _forward(self, request: web.Request, ex: Exchange, run: ChainRun) -> web.StreamResponse:
        route = ex.route
        timeouts = route.upstream.timeouts
        if waited := await self.order.wait_turn(ex, timeouts.session_order_s, timeouts.session_stream_grace_s):
            self.metrics.child(self.metrics.session_order_waits, route.label, waited).inc()
        sent = time.perf_counter()
        # Retries, breakers and fallbacks happen in `forward`, before anything reaches the caller.
        forwarded = await forward(self.transport, ex, route, self.metrics)
        self.order.opened(ex, timeouts.session_stream_grace_s)  # the session's requests waiting on this may go
        if isinstance(forwarded, Reply):  # a degraded reply: every upstream failed
            return self._local_reply(ex, run, forwarded)
        async with forwarded:  # the connection, the breaker's verdict and the endpoint's slot, given back on exit
            response, upstream = forwarded.response, forwarded.upstream
            assert ex.upstream_headers_at is not None  # `forward` marks it when the head arrives
            self.metrics.child(self.metrics.upstream_seconds, upstream.name).observe(ex.upstream_headers_at - sent)
            ex.status = response.status
            ex.streaming = response.event_stream
            ex.response_headers = caller_response_headers(response.headers)
            ex.response_headers["x-request-id"] = ex.request_id
            ex.response_headers["x-agent-proxy-upstream"] = upstream.name
            run.response_headers(ex)
            idle = upstream.timeouts.idle_s
            observed = bool(run.observers)
            out: web.StreamResponse
            try:
                if ex.streaming:
                    out = EventStreamResponse(status=response.status, headers=ex.response_headers)
                    await self._stream_events(request, ex, run, response, out, idle)
                elif observed or short_body(response):  # a short one was read whole by `forward`
                    body = await response.read(idle)
                    if observed:
                        body = run.response_body(ex, body)
                    # A Response sends its head and body in one write: one syscall, one packet.
                    out = web.Response(status=response.status, headers=ex.response_headers, body=body)
                    await out.prepare(request)
                    ex.first_byte_at = time.perf_counter()
                    ex.outcome = Outcome.OK  # the caller has the whole answer once it is written
                    await out.write_eof()
                else:
                    out = web.StreamResponse(status=response.status, headers=ex.response_headers)
                    await self._pass_through(request, ex, response, out, idle)
            except ConnectionResetError:  # the caller went away mid-response
                if ex.outcome is None:
                    ex.outcome = Outcome.CLIENT_GONE
            if ex.outcome is None:
                ex.outcome = Outcome.OK
            return out

    async def _pass_through(
        self,
        request: web.Request,
        ex: Exchange,
        response: UpstreamResponse,
        out: web.StreamResponse,
        idle: float,
    ) -> None:
        if response.content_length is not None:
            out.content_length = response.content_length
        await out.prepare(request)
        try:
            async for chunk in response.chunks(idle):
                if ex.first_byte_at is None:
                    ex.first_byte_at = time.perf_counter()
                await out.write(chunk)
        except UpstreamStreamBroken as err:
            ex.error, ex.outcome = err, Outcome.STREAM_BROKEN
            self._log_broken(ex)
            if request.transport is not None:  # a cut body can only be signalled by a cut connection
                request.transport.close()
            return
        ex.outcome = Outcome.OK
        await out.write_eof()

    async def _stream_events(
        self,
        request: web.Request,
        ex: Exchange,
        run: ChainRun,
        response: UpstreamResponse,
        out: web.StreamResponse,
        idle: float,
    ) -> None:
        """SSE: whole events only, so a broken upstream never leaves half an event with the caller.

        The answer is complete at the protocol's terminal event: from then on usage is final and
        completion may run, whatever the upstream still sends or the caller does next.
        """
        out.content_length = None
        await out.prepare(request)
        decoder = SSEDecoder(response.limits.max_event_bytes)
        observed = bool(run.observers)
        self._streams.add(response)
        try:
            arrived = response.read_nowait()  # what came with the upstream's head, if anything
            done = bool(arrived) and await self._relay_chunk(ex, run, out, decoder, arrived, observed)
            if ex.first_byte_at is None:
                await out.write(b"")  # nothing to send with it: the caller gets the head now
            if not done:
                async for chunk in response.chunks(idle):
                    if await self._relay_chunk(ex, run, out, decoder, chunk, observed):
                        done = True
                        break
            if not done:
                tail = decoder.flush()
                if tail and not ex.protocol.is_terminal_event(tail[-1]):
                    raise UpstreamStreamBroken("the upstream stream ended mid-event", code="upstream_stream_broken")
                if observed:
                    tail = run.response_events(ex, tail) + run.response_end(ex)
                if tail:
                    await self._write_events(ex, out, tail)
        except UpstreamStreamBroken as err:
            # A stop is nobody's failure: the breaker gets no verdict from it.
            ex.error, ex.outcome = err, Outcome.ERROR if isinstance(err, ShuttingDown) else Outcome.STREAM_BROKEN
            self._log_broken(ex)
            await self._write_events(ex, out, [ex.protocol.stream_error_event(err)])
        finally:
            self._streams.discard(response)
        if ex.outcome is None:
            ex.outcome = Outcome.OK  # before the last write: a caller that hangs up at the terminal event has it all
        await out.write_eof()

    async def _relay_chunk(
        self, ex: Exchange, run: ChainRun, out: web.StreamResponse, decoder: SSEDecoder, chunk: bytes, observed: bool
    ) -> bool:
        """Relays the chunk's events; True once the protocol's terminal event went out."""
        if ex.first_byte_at is None:
            # The first event goes out before the rest of its chunk is decoded, so the time to
            # first byte does not grow with how much the upstream sent at once.
            if await self._relay(ex, run, out, decoder.feed(chunk, limit=1), observed):
                return True
            chunk = b""
        return await self._relay(ex, run, out, decoder.feed(chunk), observed)

    async def _relay(
        self, ex: Exchange, run: ChainRun, out: web.StreamResponse, events: list[SSEEvent], observed: bool
    ) -> bool:
        terminal = bool(events) and ex.protocol.is_terminal_event(events[-1])
        if observed and events:
            events = run.response_events(ex, events)
            if terminal and events:  # what a stage still holds goes out before the terminal event
                events[-1:-1] = run.response_end(ex)
        if events:
            await self._write_events(ex, out, events)
        if terminal:
            ex.outcome = Outcome.OK
        return terminal

    @staticmethod
    async def _write_events(ex: Exchange, out: web.StreamResponse, events: list[SSEEvent]) -> None:
        if ex.first_byte_at is None:
            ex.first_byte_at = time.perf_counter()
        await out.write(encode(events))

    @staticmethod
    def _log_broken(ex: Exchange) -> None:
        log.warning(
            "upstream broke mid-response",
            extra={
                "fields": {
                    "request_id": ex.request_id,
                    "upstream": ex.upstream_name,
                    "code": ex.error.code if ex.error else None,
                }
            },
        )

    def _finish(self, ex: Exchange, run: ChainRun) -> None:
        """Metrics now; stage completion, then the log line (it carries tokens and cost), once the caller has the
        answer: at once when it was written whole, else (or from where it has to wait) in a task."""
        ex.finished_at = time.perf_counter()
        self.trimmer.body_done(len(ex.body))  # a large body: its memory goes back once completion let it go
        m = self.metrics
        label = ex.route.label
        m.child(m.requests, label, ex.upstream_name or "none", status_class(ex.status)).inc()
        m.child(m.request_seconds, label).observe(ex.elapsed_s)
        if ex.ttfb_s is not None:
            m.child(m.ttfb_seconds, label).observe(ex.ttfb_s)
        if ex.error is not None:
            m.child(m.errors, ex.error.kind, ex.error.source).inc()
        for stage, decision, mode in ex.decisions:
            m.child(m.stage_decisions, stage, decision_label(decision), mode).inc()
        if run.completing:  # a chain whose stages all pass completion through needs no task
            self.spawn(self._complete(ex, run))
        else:
            _after_completion(ex)

    @staticmethod
    async def _complete(ex: Exchange, run: ChainRun) -> None:
        await run.complete(ex)
        _after_completion(ex)


def _after_completion(ex: Exchange) -> None:
    """The log line and the request's span carry tokens and cost: they wait for completion."""
    log_request(ex)
    if ex.trace is not None:
        ex.trace.end(ex)


async def drain(tasks: set[asyncio.Task[None]]) -> None:
    with contextlib.suppress(Exception):
        await asyncio.gather(*tasks, return_exceptions=True)

"""Forwarding to an upstream: retries, breakers, fallbacks, timeouts, and one owner per answer.

Timeouts: `connect_s` to open a connection, `first_byte_s` until the response headers,
`idle_s` between two chunks of the body, `total_s` overall: the primary upstream's
`total_s`, counted from the request's arrival, is the deadline of the whole exchange,
retries and fallbacks included.

`forward` tries the route's targets (the upstream, then its fallbacks) in order. Within
a target it picks an endpoint (least in flight, breaker permitting) and retries what
the upstream's `retries.on` lists, with backoff, while attempts and the deadline allow.
All of this happens before the response is accepted: a short body (its length known,
`SHORT_BODY` at most, not a stream) is read whole first, so a cut in it is retried too;
once a response is handed to the handler, bytes may reach the caller, and nothing is ever
tried again. The answer handed over is a `Forwarded`, used in `async with`: whatever
happens (the caller gone, a cancellation, a timeout, a stage's exception), leaving it
gives the breaker its verdict, frees the endpoint's in-flight slot and gives the
connection back (or closes it). Until it is handed over, `forward` owns it the same way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass
from types import TracebackType

from proxy.auth.signing import sign_request
from proxy.errors import (
    ProxyError,
    ServiceUnavailable,
    UpstreamLimitExceeded,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.exchange import Exchange, Outcome, Reply
from proxy.forward.backoff import parse_retry_after, retry_delay
from proxy.forward.balancer import Lease
from proxy.forward.degrade import degraded_reply
from proxy.forward.headers import upstream_request_headers
from proxy.forward.response import UpstreamResponse
from proxy.forward.transport import DRAIN_BYTES, DRAIN_S, Transport
from proxy.metrics import Metrics
from proxy.policy.compile import CompiledRoute, CompiledUpstream, Target

log = logging.getLogger("agent_proxy.upstream")

# RFC 9110 section 9.2.2; POST and PATCH may have done something even when no answer came back.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Error codes for failures where the request provably never left: safe to repeat whatever the method.
NOT_SENT = frozenset({"upstream_connect_failed", "upstream_connect_timeout", "circuit_open"})
SHORT_BODY = 256 * 1024  # read whole, in one call, and written with its head in one write


async def open_upstream(
    transport: Transport,
    ex: Exchange,
    route: CompiledRoute,
    upstream: CompiledUpstream,
    base_url: str | None = None,
    *,
    first_byte_s: float | None = None,
    total_s: float | None = None,
) -> UpstreamResponse:
    """One attempt: send the request to one endpoint and wait for the response head; the body is read later."""
    timeouts = upstream.timeouts
    base_url = base_url or upstream.base_url
    url = base_url + route.upstream_path(ex.raw_path or ex.path, ex.path)
    if ex.query_string:
        url += "?" + ex.query_string
    headers = upstream_request_headers(
        ex.headers, upstream.inject_headers, ex.request_id, route.forwarded_headers, ex.peer
    )
    body = ex.body_to_send()
    if upstream.config.sign_requests and upstream.config.signing_key is not None:
        # Auth: caller identity + HMAC signature for tool servers (proxy/auth/signing.py, docs/auth.md).
        sign_request(headers, upstream.config.signing_key, ex.caller, ex.method, url, body)
    attempt = ex.trace.attempt(upstream.name, base_url, headers, ex.model_requested) if ex.trace else None
    now = asyncio.get_running_loop().time()
    try:
        response = await transport.open(
            ex.method,
            url,
            headers,
            body,
            connect_s=timeouts.connect_s,
            first_byte_at=now + (first_byte_s or timeouts.first_byte_s),
            deadline=now + (total_s or timeouts.total_s),
            limits=upstream.limits,
            proxy=upstream.proxies.get(base_url),
            upstream=upstream.name,
        )
    except BaseException as exc:
        if attempt is not None:
            attempt.failed(exc)
        raise
    if attempt is not None:
        attempt.answered(response.status)
    return response


class Forwarded:
    """The one owner of an accepted answer: `async with` it; leaving gives everything back, whatever happened.

    The breaker's verdict: a failure status or a stream broken mid-way fails; a caller gone is no
    verdict. The connection goes back to the pool when the body was read to its end; when the
    caller has its whole answer but the upstream has not ended its body, the rest is read off the
    request path (bounded); in every other case the connection is closed.
    """

    __slots__ = ("ex", "lease", "response", "transport", "upstream")

    def __init__(
        self, response: UpstreamResponse, upstream: CompiledUpstream, lease: Lease, ex: Exchange, transport: Transport
    ) -> None:
        self.response = response
        self.upstream = upstream
        self.lease = lease
        self.ex = ex
        self.transport = transport

    async def __aenter__(self) -> Forwarded:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ex, response = self.ex, self.response
        broken = isinstance(exc, UpstreamStreamBroken) or ex.outcome is Outcome.STREAM_BROKEN
        if broken or response.status in self.upstream.failure_statuses:
            self.lease.finish(False)
        elif ex.outcome is None or exc is not None:
            self.lease.finish(None)
        else:
            self.lease.finish(True)
        if response.finished:
            response.release()
        elif ex.outcome is Outcome.OK and exc is None:
            self.transport.finish_later(response)
        else:
            response.close()


@dataclass(slots=True)
class _Failure:
    kind: str  # degraded-reply kind: rate_limited, timeout, upstream_error
    reason: str  # metric label: the status, connect_error, timeout or open
    sent: bool  # the request may have reached the upstream
    retryable: bool  # listed in the upstream's `retries.on`
    error: ProxyError  # what the caller gets if this is the last word
    retry_after_s: float | None = None


async def forward(
    transport: Transport,
    ex: Exchange,
    route: CompiledRoute,
    metrics: Metrics,
    rng: random.Random | None = None,
) -> Forwarded | Reply:
    """A response head worth giving the caller, or a degraded reply; raises the last failure otherwise."""
    targets = route.targets or (Target(route.upstream),)
    total_s = route.upstream.timeouts.total_s
    deadline = ex.started + (total_s if ex.time_limit_s is None else min(total_s, ex.time_limit_s))
    repeatable = route.retry_unsafe or ex.protocol.parses_json or ex.method in IDEMPOTENT
    caller_model = ex.model_requested if len(targets) > 1 or route.degraded is not None else None
    last: _Failure | None = None
    sent = False  # some attempt may have reached an upstream
    for position, target in enumerate(targets):
        upstream = target.upstream
        if position:
            if (sent and not repeatable) or time.perf_counter() >= deadline:
                break
            if not upstream.balancer.available():
                last = _open_failure(upstream)
                continue
            metrics.fallbacks.labels(route.label, upstream.name).inc()
        _use_model(ex, target.model or (caller_model if position else None))
        ex.upstream_name = upstream.name
        attempt = 0
        while True:
            remaining = deadline - time.perf_counter()
            lease = upstream.balancer.pick() if remaining > 0 else None
            if lease is None:
                last = _open_failure(upstream) if remaining > 0 else _deadline_failure(upstream)
                break
            attempt += 1
            first_byte_s = min(upstream.timeouts.first_byte_s, remaining)
            try:
                response = await open_upstream(
                    transport, ex, route, upstream, lease.url, first_byte_s=first_byte_s, total_s=remaining
                )
            except (UpstreamTimeout, UpstreamUnreachable) as err:
                lease.finish(False)
                response, last = None, _error_failure(err, upstream)
            except BaseException:
                lease.finish(None)
                raise
            else:
                ex.upstream_headers_at = time.perf_counter()
                try:
                    accepted, last = await _accept(response, upstream)
                except BaseException:  # the caller went away, or a cancellation: nothing may stay leased
                    lease.finish(None)
                    response.close()
                    raise
                if accepted:
                    return Forwarded(response, upstream, lease, ex, transport)
                if last.reason == "broken_body":
                    lease.finish(False)
                    response.close()
                    response = None
            assert last is not None
            sent = sent or last.sent
            delay = _retry_delay(last, attempt, upstream, deadline, repeatable, rng)
            if response is not None:
                if delay is None and not _fallback_left(targets, position, deadline, sent, repeatable):
                    # The last word: the upstream's own answer goes to the caller, unless the route degrades.
                    if (reply := _degrade(ex, route, last, caller_model, metrics)) is None:
                        return Forwarded(response, upstream, lease, ex, transport)
                    await _discard(response, lease, upstream)
                    return reply
                await _discard(response, lease, upstream)
            if delay is None:
                break
            metrics.upstream_retries.labels(upstream.name, last.reason).inc()
            fields = {"request_id": ex.request_id, "upstream": upstream.name, "reason": last.reason, "delay_s": delay}
            log.debug("retrying upstream", extra={"fields": fields})
            await asyncio.sleep(delay)
    assert last is not None
    reply = _degrade(ex, route, last, caller_model, metrics)
    if reply is not None:
        return reply
    raise last.error


async def _accept(response: UpstreamResponse, upstream: CompiledUpstream) -> tuple[bool, _Failure | None]:
    """Whether to hand this answer over; else why not. A short body is read whole first: a cut is still retried."""
    if response.status in upstream.retry.statuses:
        return False, _status_failure(response, upstream)
    if short_body(response):
        try:
            await response.read(upstream.timeouts.idle_s)
        except UpstreamStreamBroken as err:
            return False, _broken_failure(err, upstream)
    return True, None


def _retry_delay(
    failure: _Failure,
    attempt: int,
    upstream: CompiledUpstream,
    deadline: float,
    repeatable: bool,
    rng: random.Random | None,
) -> float | None:
    """How long to wait before trying this upstream again, or None when it is not tried again."""
    policy = upstream.retry
    if not failure.retryable or attempt >= policy.attempts or (failure.sent and not repeatable):
        return None
    delay = retry_delay(attempt, policy.base_s, policy.max_s, failure.retry_after_s, rng)
    if time.perf_counter() + delay >= deadline:  # a retry-after beyond the deadline cannot be honoured
        return None
    return delay


def _fallback_left(targets: tuple[Target, ...], position: int, deadline: float, sent: bool, repeatable: bool) -> bool:
    if (sent and not repeatable) or time.perf_counter() >= deadline:
        return False
    return any(target.upstream.balancer.available() for target in targets[position + 1 :])


def _use_model(ex: Exchange, model: str | None) -> None:
    if model is not None and ex.has_llm_body and (rewritten := ex.protocol.with_model(ex.request_json, model)):
        ex.replace_request_json(rewritten)


async def _discard(response: UpstreamResponse, lease: Lease, upstream: CompiledUpstream) -> None:
    """Drop a response that will not be used; a short error body is read first so its connection is reused."""
    try:
        length = response.content_length
        if length is not None and length <= DRAIN_BYTES:
            await response.drain(DRAIN_BYTES, DRAIN_S)
    finally:
        response.release()
        lease.finish(response.status not in upstream.failure_statuses)


def _open_failure(upstream: CompiledUpstream) -> _Failure:
    wait = max(1, math.ceil(upstream.balancer.retry_after_s()))
    message = f"upstream '{upstream.name}' is unavailable (circuit open)"
    error = ServiceUnavailable(message, code="circuit_open", headers={"retry-after": str(wait)})
    return _Failure("upstream_error", "open", sent=False, retryable=False, error=error, retry_after_s=wait)


def _error_failure(err: ProxyError, upstream: CompiledUpstream) -> _Failure:
    timeout = isinstance(err, UpstreamTimeout)
    policy = upstream.retry
    return _Failure(
        kind="timeout" if timeout else "upstream_error",
        reason="timeout" if timeout else "connect_error",
        sent=err.code not in NOT_SENT,
        retryable=policy.on_timeout if timeout else policy.on_connect_error,
        error=err,
    )


def _status_failure(response: UpstreamResponse, upstream: CompiledUpstream) -> _Failure:
    status = response.status
    retry_after = parse_retry_after(response.headers)
    headers = {"retry-after": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    error = ServiceUnavailable(f"upstream '{upstream.name}' answered {status}", code="upstream_status", headers=headers)
    return _Failure(
        kind="rate_limited" if status == 429 else "timeout" if status in (408, 504) else "upstream_error",
        reason=str(status),
        sent=True,
        retryable=True,
        error=error,
        retry_after_s=retry_after,
    )


def _broken_failure(err: UpstreamStreamBroken, upstream: CompiledUpstream) -> _Failure:
    """A short body cut before it was whole: retried as a connection error is."""
    retryable = upstream.retry.on_connect_error and not isinstance(err, UpstreamLimitExceeded)  # a bomb stays one
    return _Failure("upstream_error", "broken_body", sent=True, retryable=retryable, error=err)


def short_body(response: UpstreamResponse) -> bool:
    """Read whole before the answer is accepted, and written with its head in one write: not a stream,
    its length known and `SHORT_BODY` at most."""
    length = response.content_length
    return length is not None and length <= SHORT_BODY and not response.event_stream


def _deadline_failure(upstream: CompiledUpstream) -> _Failure:
    error = UpstreamTimeout(f"upstream '{upstream.name}' did not answer before the request's deadline")
    return _Failure("timeout", "timeout", sent=False, retryable=False, error=error)


def _degrade(
    ex: Exchange, route: CompiledRoute, failure: _Failure, model: str | None, metrics: Metrics
) -> Reply | None:
    reply = degraded_reply(ex, route.degraded, failure.kind, model)
    if reply is not None:
        metrics.degraded_replies.labels(route.label, failure.kind).inc()
        ex.decisions.append(("resilience", f"degraded:{failure.kind}", "enforce"))
    return reply

"""Forwarding to an upstream: one pooled client, retries, breakers, fallbacks, timeouts, error mapping.

Foreign exceptions (the HTTP client's, asyncio's) are mapped here, at the boundary, into the
`ProxyError` tree. Timeouts: `connect_s` to open a connection, `first_byte_s` until
the response headers, `idle_s` between two chunks of the body, `total_s` overall: the
primary upstream's `total_s`, counted from the request's arrival, is the deadline of
the whole exchange, retries and fallbacks included.

`forward` tries the route's targets (the upstream, then its fallbacks) in order. Within
a target it picks an endpoint (least in flight, breaker permitting) and retries what
the upstream's `retries.on` lists, with backoff, while attempts and the deadline allow.
All of this happens before the response is accepted: a short body (its length known,
`SHORT_BODY` at most, not a stream) is read whole first, so a cut in it is retried too;
once a response is handed to the handler, bytes may reach the caller, and nothing is ever
tried again. The handler
gives the breaker its verdict when the response is over (`Forwarded.finish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from proxy.auth.signing import sign_request
from proxy.errors import ProxyError, ServiceUnavailable, UpstreamStreamBroken, UpstreamTimeout, UpstreamUnreachable
from proxy.exchange import Exchange, Outcome, Reply
from proxy.headers import upstream_request_headers
from proxy.metrics import Metrics
from proxy.policy.compile import CompiledRoute, CompiledUpstream
from proxy.resilience.backoff import parse_retry_after, retry_delay
from proxy.resilience.balancer import Lease
from proxy.resilience.degrade import degraded_reply
from proxy.resilience.targets import Target
from proxy.upstream_http import ConnectFailed, ConnectTimeout, HTTPClient, Response, UpstreamHTTPError

log = logging.getLogger("agent_proxy.upstream")

READ_CHUNK = 64 * 1024
# RFC 9110 section 9.2.2; POST and PATCH may have done something even when no answer came back.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Error codes for failures where the request provably never left: safe to repeat whatever the method.
NOT_SENT = frozenset({"upstream_connect_failed", "upstream_connect_timeout", "circuit_open"})
DISCARD_READ_LIMIT = 64 * 1024
SHORT_BODY = 256 * 1024  # read whole, in one call, and written with its head in one write
DISCARD_READ_S = 1.0


def new_upstream_client() -> HTTPClient:
    """One client for the process lifetime: connection reuse is most of the latency budget.

    It keeps no cookies: it serves every caller, and what one upstream sets for one caller
    must never ride on another's request.
    """
    return HTTPClient(keepalive_s=30.0)


async def open_upstream(
    client: HTTPClient,
    ex: Exchange,
    route: CompiledRoute,
    upstream: CompiledUpstream,
    base_url: str | None = None,
    *,
    first_byte_s: float | None = None,
    total_s: float | None = None,
) -> Response:
    """One attempt: send the request to one endpoint and wait for the response head; the body is read later."""
    timeouts = upstream.timeouts
    url = (base_url or upstream.base_url) + route.upstream_path(ex.raw_path or ex.path, ex.path)
    if ex.query_string:
        url += "?" + ex.query_string
    headers = upstream_request_headers(ex.headers, upstream.inject_headers, ex.request_id)
    body = ex.body_to_send()
    if upstream.config.sign_requests and upstream.config.signing_key is not None:
        # Auth: caller identity + HMAC signature for tool servers (proxy/auth/signing.py, docs/auth.md).
        sign_request(headers, upstream.config.signing_key, ex.caller, ex.method, url, body)
    now = asyncio.get_running_loop().time()
    try:
        return await client.request(
            ex.method,
            url,
            headers,
            body,
            connect_s=timeouts.connect_s,
            first_byte_at=now + (first_byte_s or timeouts.first_byte_s),
            deadline=now + (total_s or timeouts.total_s),
        )
    except ConnectTimeout:
        raise UpstreamTimeout(
            f"could not connect to upstream '{upstream.name}' in time", code="upstream_connect_timeout"
        ) from None
    except TimeoutError:
        raise UpstreamTimeout(f"upstream '{upstream.name}' did not answer in time") from None
    except ConnectFailed:
        raise UpstreamUnreachable(
            f"could not connect to upstream '{upstream.name}'", code="upstream_connect_failed"
        ) from None
    except (UpstreamHTTPError, OSError):
        raise UpstreamUnreachable(
            f"upstream '{upstream.name}' closed the connection without answering", code="upstream_connection_closed"
        ) from None


@dataclass(slots=True)
class Forwarded:
    """A response head from one endpoint; the handler streams the body, then calls `finish` exactly once."""

    response: Response
    upstream: CompiledUpstream
    lease: Lease

    def finish(self, ex: Exchange, broken: bool = False) -> None:
        """The breaker's verdict: a failure status or a stream broken mid-way fails; a caller gone is no verdict."""
        if broken or ex.outcome is Outcome.STREAM_BROKEN or self.response.status in self.upstream.failure_statuses:
            self.lease.finish(False)
        elif ex.outcome is None:
            self.lease.finish(None)
        else:
            self.lease.finish(True)


@dataclass(slots=True)
class _Failure:
    kind: str  # degraded-reply kind: rate_limited, timeout, upstream_error
    reason: str  # metric label: the status, connect_error, timeout or open
    sent: bool  # the request may have reached the upstream
    retryable: bool  # listed in the upstream's `retries.on`
    error: ProxyError  # what the caller gets if this is the last word
    retry_after_s: float | None = None


async def forward(
    client: HTTPClient,
    ex: Exchange,
    route: CompiledRoute,
    metrics: Metrics,
    rng: random.Random | None = None,
) -> Forwarded | Reply:
    """A response head worth giving the caller, or a degraded reply; raises the last failure otherwise."""
    targets = route.targets or (Target(route.upstream),)
    deadline = ex.started + route.upstream.timeouts.total_s
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
                    client, ex, route, upstream, lease.url, first_byte_s=first_byte_s, total_s=remaining
                )
            except (UpstreamTimeout, UpstreamUnreachable) as err:
                lease.finish(False)
                response, last = None, _error_failure(err, upstream)
            except BaseException:
                lease.finish(None)
                raise
            else:
                ex.upstream_headers_at = time.perf_counter()
                if response.status not in upstream.retry.statuses:
                    if not short_body(response):
                        return Forwarded(response, upstream, lease)
                    try:  # nothing has reached the caller yet: a cut here can still be retried
                        await read_whole_body(response, upstream.timeouts.idle_s, small=True)
                    except UpstreamStreamBroken as err:
                        lease.finish(False)
                        response.close()
                        response, last = None, _broken_failure(err, upstream)
                    else:
                        return Forwarded(response, upstream, lease)
                else:
                    last = _status_failure(response, upstream)
            sent = sent or last.sent
            delay = _retry_delay(last, attempt, upstream, deadline, repeatable, rng)
            if response is not None:
                if delay is None and not _fallback_left(targets, position, deadline, sent, repeatable):
                    # The last word: the upstream's own answer goes to the caller, unless the route degrades.
                    if (reply := _degrade(ex, route, last, caller_model, metrics)) is None:
                        return Forwarded(response, upstream, lease)
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
    if model is None or not ex.protocol.parses_json or not ex.body:
        return
    body = ex.request_json
    if isinstance(body, dict) and body.get("model") != model:
        ex.replace_request_json({**body, "model": model})


async def _discard(response: Response, lease: Lease, upstream: CompiledUpstream) -> None:
    """Drop a response that will not be used; a short error body is read first so its connection is reused."""
    length = response.content_length
    try:
        if length is not None and length <= DISCARD_READ_LIMIT:
            await response.read(asyncio.get_running_loop().time() + DISCARD_READ_S)
    except (TimeoutError, UpstreamHTTPError, OSError):
        response.close()
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


def _status_failure(response: Response, upstream: CompiledUpstream) -> _Failure:
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
    return _Failure("upstream_error", "broken_body", sent=True, retryable=upstream.retry.on_connect_error, error=err)


def short_body(response: Response) -> bool:
    """Read whole before the answer is accepted, and written with its head in one write: not a stream,
    its length known and `SHORT_BODY` at most."""
    length = response.content_length
    return length is not None and length <= SHORT_BODY and not is_event_stream(response)


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


@contextlib.contextmanager
def _reading_body() -> Iterator[None]:
    """A read of the body that times out or fails is a broken stream, whichever reader met it."""
    try:
        yield
    except TimeoutError:
        raise UpstreamStreamBroken("the upstream stopped sending data", code="upstream_idle_timeout") from None
    except (UpstreamHTTPError, OSError) as exc:
        raise UpstreamStreamBroken("the upstream connection broke mid-response", code="upstream_stream_broken") from exc


def _read_by(response: Response, idle_s: float, now: float) -> float:
    """When the next read times out: an idle gap, or the request's overall deadline if that comes first."""
    by = now + idle_s
    return by if response.deadline is None or by < response.deadline else response.deadline


async def iter_body(response: Response, idle_s: float) -> AsyncIterator[bytes]:
    """Body chunks as they arrive; a gap longer than `idle_s`, the overall deadline, or a cut is a broken stream."""
    loop = asyncio.get_running_loop()
    with _reading_body():
        while chunk := await response.readany(_read_by(response, idle_s, loop.time())):
            yield chunk


async def read_whole_body(response: Response, idle_s: float, small: bool = False) -> bytes:
    """The body at once; a `small` body (its length known and short) gets `idle_s` for all of it."""
    if not small:
        return b"".join([chunk async for chunk in iter_body(response, idle_s)])
    with _reading_body():
        return await response.read(_read_by(response, idle_s, asyncio.get_running_loop().time()))


def is_event_stream(response: Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")

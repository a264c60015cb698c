"""Forwarding to an upstream: one pooled client session, timeouts, error mapping.

Foreign exceptions (aiohttp, asyncio) are mapped here, at the boundary, into the
`ProxyError` tree. Timeouts: `connect_s` to open a connection, `first_byte_s` until
the response headers, `idle_s` between two chunks of the body, `total_s` overall.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from proxy.errors import UpstreamStreamBroken, UpstreamTimeout, UpstreamUnreachable
from proxy.exchange import Exchange
from proxy.headers import upstream_request_headers
from proxy.policy.compile import CompiledRoute, CompiledUpstream

READ_CHUNK = 64 * 1024


def new_client_session() -> aiohttp.ClientSession:
    """One session for the process lifetime: connection reuse is most of the latency budget."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
        timeout=aiohttp.ClientTimeout(total=None),
    )


async def open_upstream(
    session: aiohttp.ClientSession, ex: Exchange, route: CompiledRoute, upstream: CompiledUpstream
) -> aiohttp.ClientResponse:
    """Send the request and wait for the response head; the body is read by the caller."""
    timeouts = upstream.timeouts
    url = upstream.base_url + route.upstream_path(ex.raw_path or ex.path, ex.path)
    if ex.query_string:
        url += "?" + ex.query_string
    headers = upstream_request_headers(ex.headers, upstream.inject_headers, ex.request_id)
    body = ex.body_to_send()
    try:
        async with asyncio.timeout(timeouts.first_byte_s):
            return await session.request(
                ex.method,
                aiohttp.client.URL(url, encoded=True),
                data=body or None,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeouts.total_s, sock_connect=timeouts.connect_s),
            )
    except TimeoutError:
        raise UpstreamTimeout(f"upstream '{upstream.name}' did not answer in time") from None
    except aiohttp.ClientConnectorError:
        raise UpstreamUnreachable(f"could not connect to upstream '{upstream.name}'") from None
    except (aiohttp.ClientError, OSError):
        raise UpstreamUnreachable(f"upstream '{upstream.name}' closed the connection without answering") from None


async def iter_body(response: aiohttp.ClientResponse, idle_s: float) -> AsyncIterator[bytes]:
    """Body chunks as they arrive; a gap longer than `idle_s`, or a cut, is a broken stream."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(None) as deadline:
            while True:
                deadline.reschedule(loop.time() + idle_s)
                chunk = await response.content.readany()
                deadline.reschedule(None)  # never let the deadline fire while the consumer holds a chunk
                if not chunk:
                    return
                yield chunk
    except TimeoutError:
        raise UpstreamStreamBroken("the upstream stopped sending data", code="upstream_idle_timeout") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamStreamBroken("the upstream connection broke mid-response", code="upstream_stream_broken") from exc


async def read_whole_body(response: aiohttp.ClientResponse, idle_s: float) -> bytes:
    chunks = [chunk async for chunk in iter_body(response, idle_s)]
    return b"".join(chunks)


def is_event_stream(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")

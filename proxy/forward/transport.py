"""The upstream transport: aiohttp's `ClientSession`, tuned for a reverse proxy, behind one narrow interface.

Parsing and pooling HTTP from peers the proxy does not control is a security boundary, so a
well-kept library owns it. The session is set up for a proxy that serves every caller: no
cookie jar (what one upstream sets for one caller must never ride on another's request), no
redirects, no decoding by aiohttp (`response.py` decodes within bounds), a per-origin
connection cap, keep-alive expiry for idle connections, a DNS cache, and limits on response
heads. Failures are told apart by when they happened, which is what the retry rules need:
could not connect (nothing sent), connect timed out (nothing sent), no whole answer head in
time or at all (maybe processed), cut mid-body (`response.py`).
"""

from __future__ import annotations

import asyncio
import urllib.request
from functools import lru_cache
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnreachable
from proxy.forward.bounds import ResponseLimits, UpstreamPool
from proxy.forward.deadlines import Deadlines
from proxy.forward.pool import GuardedConnector
from proxy.forward.response import DECODED, UpstreamResponse

ACCEPT_ENCODING = "gzip, deflate"  # what `response.py` decodes
DRAIN_BYTES = 64 * 1024  # of a body nobody needs, read to keep its connection; more: the connection is closed
DRAIN_S = 1.0


@lru_cache(maxsize=64)
def _client_timeout(connect_s: float) -> aiohttp.ClientTimeout:
    # The wait for the answer head and for each body read is the proxy's own (first_byte_s, idle_s, total_s).
    return aiohttp.ClientTimeout(total=None, connect=connect_s, sock_connect=connect_s)


def resolve_proxy(url: str, setting: str | None) -> str | None:
    """The HTTP proxy to reach `url` through: the policy's, or HTTPS_PROXY / HTTP_PROXY unless NO_PROXY says not.

    Resolved once per upstream endpoint at policy load, never per request.
    """
    if setting == "direct":
        return None
    if setting is not None:
        return setting
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass_environment(parts.hostname, proxies):
        return None
    return proxies.get(parts.scheme)


class Transport:
    """One session for the process lifetime: connection reuse is most of the latency budget."""

    def __init__(self, pool: UpstreamPool | None = None) -> None:
        pool = pool or UpstreamPool()
        connector = GuardedConnector(
            limit=0,
            limit_per_host=pool.connections_per_origin,
            keepalive_timeout=pool.keepalive_s,
            ttl_dns_cache=pool.dns_cache_s or None,
            use_dns_cache=pool.dns_cache_s > 0,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,  # proxies come from the policy, resolved per upstream (`resolve_proxy`)
            skip_auto_headers=("User-Agent",),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._draining: set[asyncio.Task[None]] = set()
        self._head_waits = Deadlines()  # first_byte_s, without a loop timer made and cancelled per request

    async def open(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        body: bytes,
        *,
        connect_s: float,
        first_byte_at: float,
        deadline: float,
        limits: ResponseLimits,
        proxy: str | None = None,
        upstream: str = "upstream",
    ) -> UpstreamResponse:
        """Send one request and wait for its answer head (until loop time `first_byte_at`); the body is read later.

        `url` is sent exactly as given (already percent-encoded): the caller's path and query keep their bytes.
        """
        headers["accept-encoding"] = ACCEPT_ENCODING
        target = URL(url, encoded=True)
        if target.user is not None:  # user info in an upstream URL is its Basic credential, unless the policy sets one
            if "authorization" not in headers:
                headers["authorization"] = aiohttp.BasicAuth(target.user, target.password or "").encode()
            target = target.with_user(None)
        try:
            with self._head_waits.at(first_byte_at):
                raw = await self._session.request(
                    method,
                    target,
                    headers=headers,
                    data=body or None,
                    allow_redirects=False,
                    proxy=proxy,
                    timeout=_client_timeout(connect_s),
                    max_line_size=limits.max_header_bytes,
                    max_field_size=limits.max_header_bytes,
                    max_headers=limits.max_headers,
                )
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamTimeout(
                f"could not connect to upstream '{upstream}' in time", code="upstream_connect_timeout"
            ) from None
        except aiohttp.ClientConnectorError:
            raise UpstreamUnreachable(
                f"could not connect to upstream '{upstream}'", code="upstream_connect_failed"
            ) from None
        except TimeoutError:
            raise UpstreamTimeout(f"upstream '{upstream}' did not answer in time") from None
        except aiohttp.ClientResponseError:  # a head too large, with too many fields, or not HTTP
            raise UpstreamProtocolError(
                f"upstream '{upstream}' sent an answer head that is malformed or too large",
                code="upstream_bad_response",
            ) from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnreachable(
                f"upstream '{upstream}' closed the connection without answering", code="upstream_connection_closed"
            ) from None
        encoding = raw.headers.get("content-encoding", "identity").strip().lower()
        if raw.status < 200 or (encoding not in DECODED and encoding != "identity"):
            raw.close()  # an upgrade nobody asked for, or an encoding the proxy did not offer
            raise UpstreamProtocolError(
                f"upstream '{upstream}' answered with a status or encoding the proxy did not ask for",
                code="upstream_bad_response",
            )
        return UpstreamResponse(raw, limits, deadline)

    def connections(self) -> tuple[int, int]:
        """(held by a request or a drain, idle in the pool): what /admin/status and the leak tests read.

        aiohttp has no public count; its connector's two collections are read as they are.
        """
        connector = self._session.connector
        assert isinstance(connector, GuardedConnector)
        idle = sum(len(conns) for conns in connector._conns.values())
        return len(connector._acquired), idle

    def finish_later(self, response: UpstreamResponse) -> None:
        """The caller has its answer: read the rest of the body (bounded) off the request path, then release."""
        task = asyncio.get_running_loop().create_task(response.drain(DRAIN_BYTES, DRAIN_S))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def close(self) -> None:
        for task in list(self._draining):
            task.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)
        await self._session.close()

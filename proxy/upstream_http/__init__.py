"""The upstream HTTP/1.1 client: pooled keep-alive connections on asyncio protocols, parsed by httptools.

aiohttp's `ClientSession` was most of what the proxy itself cost per request (about 170 us
of CPU out of 400 in a bare forwarder, `bench/bare_forwarder.py`), for machinery a reverse
proxy never uses: cookies, redirects, proxies, auth helpers, multipart, tracing. A proxy
needs only this: a pool of connections per origin, TLS, the request in one write, the
response head as soon as it is parsed, the body as it arrives with back-pressure,
gzip/deflate, and failures told apart by when they happened (could not connect, timed out
connecting, closed before answering, cut mid-body). Parsing is llhttp's, through httptools.

One request at a time per connection, no pipelining. A connection goes back to the pool
only when its response was read to the end and both sides keep it alive.
"""

from __future__ import annotations

from proxy.upstream_http.client import HTTPClient
from proxy.upstream_http.errors import BodyBroken, ClosedBeforeAnswer, ConnectFailed, ConnectTimeout, UpstreamHTTPError
from proxy.upstream_http.response import Response

__all__ = [
    "BodyBroken",
    "ClosedBeforeAnswer",
    "ConnectFailed",
    "ConnectTimeout",
    "HTTPClient",
    "Response",
    "UpstreamHTTPError",
]

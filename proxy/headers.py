"""Which headers cross the proxy, in each direction.

Hop-by-hop headers (RFC 9110 section 7.6.1) and those a `Connection` header names
are never forwarded. The caller's credential never reaches an upstream: the
upstream's own credential from the policy is injected instead.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Iterable, Mapping

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
CALLER_CREDENTIALS = frozenset({"authorization", "x-api-key", "api-key"})
# Set again by the proxy or its HTTP client for the next hop.
RECOMPUTED = frozenset({"host", "content-length", "accept-encoding", "x-request-id"})
NOT_FORWARDED = HOP_BY_HOP | CALLER_CREDENTIALS | RECOMPUTED

NOT_RETURNED = HOP_BY_HOP | frozenset({"content-length", "content-encoding", "x-request-id", "server", "date"})

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count(secrets.randbits(32))


def _connection_named(headers: Mapping[str, str]) -> set[str]:
    """Every header a `Connection` field names; the field may be repeated, and a plain dict is case-sensitive."""
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        return {token.strip().lower() for value in headers.getall("connection", ()) for token in value.split(",")}
    return {
        token.strip().lower()
        for name, value in headers.items()
        if name.lower() == "connection"
        for token in value.split(",")
    }


def new_request_id() -> str:
    """32 hex digits: a random per-process prefix and a counter, unique without a syscall per request."""
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def request_id_from(headers: Mapping[str, str]) -> str:
    """The caller's x-request-id when it is a sane token, otherwise a new one."""
    given = headers.get("x-request-id")
    return given if given and _REQUEST_ID.fullmatch(given) else new_request_id()


def upstream_request_headers(
    caller_headers: CIMultiDict[str] | Mapping[str, str],
    inject: Iterable[tuple[str, str]],
    request_id: str,
) -> CIMultiDict[str]:
    drop = NOT_FORWARDED | _connection_named(caller_headers)
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in caller_headers.items():
        if name.lower() not in drop:
            headers.add(name, value)
    for name, value in inject:
        headers[name] = value
    headers["x-request-id"] = request_id
    return headers


def caller_response_headers(upstream_headers: Mapping[str, str]) -> CIMultiDict[str]:
    drop = NOT_RETURNED | _connection_named(upstream_headers)
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream_headers.items():
        lowered = name.lower()
        if lowered == "x-request-id":
            headers.add("x-upstream-request-id", value)
        elif lowered not in drop:
            headers.add(name, value)
    return headers

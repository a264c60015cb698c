"""Where a request goes and how its head is written: origins parsed once, the head built in one string."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from multidict import CIMultiDict

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # an empty body is still declared (Content-Length: 0)


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    host_header: str
    authorization: str | None = field(repr=False)  # from user info in the URL: never shown

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


@lru_cache(maxsize=1024)
def parse_origin(origin: str) -> Origin:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an upstream URL must be http:// or https:// with a host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    netloc = parts.netloc.rpartition("@")[2]
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode()
    return Origin(parts.scheme, parts.hostname, port, netloc, authorization)


def split_url(url: str) -> tuple[Origin, str]:
    """(origin, request target): the target is the path and query exactly as given (already encoded)."""
    start = url.find("/", url.find("://") + 3)
    if start < 0:
        return parse_origin(url), "/"
    return parse_origin(url[:start]), url[start:]


def request_head(method: str, target: str, origin: Origin, headers: CIMultiDict[str], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    if origin.authorization is not None and "authorization" not in headers:
        lines.append(f"Authorization: {origin.authorization}\r\n")
    lines.append("Accept-Encoding: gzip, deflate\r\n")
    if body or method in _BODY_METHODS:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    breaks = len(lines) + 1
    if head.count("\n") != breaks or head.count("\r") != breaks:  # a CR or LF in a name or value splits the request
        raise ValueError("a request header contains a line break")
    return head.encode("utf-8", "surrogateescape")

"""Which `Host` and `Origin` a request to the proxy's own listener may carry: the DNS-rebinding guard.

A sidecar listens on localhost, so any web page the same machine opens can aim requests at it. Two
ways through a browser, both stopped here (docs/security.md, "DNS rebinding"):

- DNS rebinding: a page on `evil.example` rebinds its own name to 127.0.0.1; the browser then sends
  the page's requests, and lets it read the answers, with `Host: evil.example`. A `Host` that is not
  a name the proxy is known by is refused.
- cross-site requests: a page on any origin sends a request to `localhost` (it cannot read a refused
  preflight's answer, but a simple request still arrives); the browser names the page in `Origin`.
  An `Origin` that is not the proxy's own, loopback, or allowed is refused.

Always allowed as `Host`: `localhost`, any IP address literal (v4, or v6 in brackets: a literal
cannot be rebound, and kubelet probes and Prometheus scrapes send the pod's IP), and the name the
policy listens on; plus `server.allowed_hosts` (or the route's `allowed_hosts`). A request without
`Origin` (SDKs, curl, other non-browser clients) is judged by `Host` alone; an `Origin` passes when it
is the request's own `Host` (same origin), names a loopback host, names an allowed host name, or
matches `allowed_origins`. `*` in either list turns that check off.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from proxy.errors import Forbidden

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_NAME = rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\]"
_PORT = r"(?::(?:[0-9]{1,5}|\*))?"

HostPattern = Annotated[
    str,
    Field(
        pattern=rf"^(?:\*|(?:{_NAME}){_PORT})$",
        max_length=260,
        description="A host name or IP literal ([::1] for IPv6), with `*.` for any subdomain and `:port` or `:*`; "
        "`*` allows every Host.",
    ),
]
OriginPattern = Annotated[
    str,
    Field(
        pattern=rf"^(?:\*|https?://(?:{_NAME}){_PORT})$",
        max_length=270,
        description="scheme://host[:port] (no path), with `*.` for any subdomain and `:*` for any port; "
        "`*` allows every Origin.",
    ),
]

LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})


@dataclass(frozen=True, slots=True)
class _Pattern:
    name: str  # lower case, no trailing dot; `*.x` matches every name ending in `.x`
    port: str | None  # None or "*": any port

    def matches(self, name: str, port: str | None) -> bool:
        if self.port not in (None, "*") and self.port != port:
            return False
        if self.name.startswith("*."):
            return name.endswith(self.name[1:])
        return name == self.name


def split_host(value: str) -> tuple[str, str | None] | None:
    """`host[:port]` as (lower-case host without a trailing dot, port or None); None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] or None
    else:
        name, colon, port_text = value.partition(":")
        port = port_text if colon else None
    if port is not None and not (port == "*" or port.isdigit()):
        return None
    name = name.rstrip(".")
    return (name, port) if name else None


@functools.lru_cache(maxsize=256)  # parsing an address per request cost more than the rest of the check
def _literal(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name[1:-1] if name.startswith("[") else name)
    except ValueError:
        return None


def _patterns(entries: Iterable[str]) -> tuple[_Pattern, ...]:
    found = []
    for entry in entries:
        parts = split_host(entry)
        if parts is not None:
            found.append(_Pattern(*parts))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class HostRules:
    """Compiled once per policy load, per route; `refusal` runs once per request (a few string compares)."""

    hosts: tuple[_Pattern, ...]
    origins: tuple[tuple[str, _Pattern], ...]  # (scheme, host pattern)
    any_host: bool = False
    any_origin: bool = False

    @classmethod
    def build(cls, hosts: Iterable[str], origins: Iterable[str], listen_host: str | None = None) -> HostRules:
        hosts, origins = list(hosts), list(origins)
        names = [*hosts]
        if listen_host and listen_host not in WILDCARD_ADDRESSES and _literal(listen_host) is None:
            names.append(listen_host)
        schemed = []
        for origin in origins:
            scheme, sep, rest = origin.partition("://")
            if sep and (pattern := _patterns([rest])):
                schemed.append((scheme.lower(), pattern[0]))
        return cls(
            hosts=_patterns(name for name in names if name != "*"),
            origins=tuple(schemed),
            any_host="*" in hosts,
            any_origin="*" in origins,
        )

    def host_allowed(self, host: str | None) -> bool:
        if host is None or self.any_host:  # no Host at all: not a browser (every browser sends one)
            return True
        parts = split_host(host)
        if parts is None:
            return False
        name, port = parts
        if name in LOOPBACK_NAMES or _literal(name) is not None:
            return True
        return any(pattern.matches(name, port) for pattern in self.hosts)

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self.any_origin:
            return True
        scheme, sep, rest = origin.strip().lower().partition("://")
        if not sep or scheme not in ("http", "https") or "/" in rest:
            return False  # `null` (sandboxed frames, file:// pages), or not an origin at all
        parts = split_host(rest)
        if parts is None:
            return False
        if host is not None and rest == host.strip().lower():
            return True  # same origin: a page this very listener served under an allowed Host
        name, port = parts
        if name in LOOPBACK_NAMES or ((address := _literal(name)) is not None and address.is_loopback):
            return True
        if any(pattern.matches(name, port) for pattern in self.hosts):
            return True
        return any(s == scheme and pattern.matches(name, port) for s, pattern in self.origins)

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """None when the request may pass; else which header refused it (`host` or `origin`), for the metric."""
        if not self.host_allowed(host):
            return "host"
        if not self.origin_allowed(origin, host):
            return "origin"
        return None


def refused(header: str) -> Forbidden:
    """The 403 for a request `HostRules.refusal` turned away, rendered in the route's (or admin's) shape."""
    return Forbidden(f"requests with this {header.title()} header are not accepted", code=f"{header}_not_allowed")

"""Header names and values a policy sets on upstream requests, checked when the policy loads.

A value with CR or LF would otherwise fail every request at send time (or split the
request head), and a policy that sets a framing or hop-by-hop header (`host`,
`content-length`, `transfer-encoding`, `connection`, ...) would fight the HTTP
client, which sets those per request. Names are RFC 9110 tokens; values are visible
ASCII, spaces, tabs and Latin-1 (obs-text) only. Messages never echo the value, since
it is often an interpolated secret.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, SecretStr

from proxy.forward.headers import HOP_BY_HOP, PROXY_HEADER_PREFIX

# Set per request by the proxy or its HTTP client: a policy may not set them.
FRAMING = frozenset({"host", "content-length", "expect", "x-request-id"})
REFUSED = HOP_BY_HOP | FRAMING
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def check_name(name: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise ValueError("a header name is a token: letters, digits and !#$%&'*+-.^_`|~ only")
    lowered = name.lower()
    if lowered in REFUSED:
        raise ValueError(f"'{lowered}' is set by the proxy for each request (framing or hop-by-hop); a policy cannot")
    if lowered.startswith(PROXY_HEADER_PREFIX):
        raise ValueError(f"'{PROXY_HEADER_PREFIX}*' headers are the proxy's own (signed caller identity)")
    return name


def check_value(value: str) -> str:
    if not _VALUE.fullmatch(value):
        raise ValueError("a header value may not hold CR, LF or other control characters, nor characters past U+00FF")
    return value


def check_secret_value(value: SecretStr) -> SecretStr:
    check_value(value.get_secret_value())
    return value


HeaderName = Annotated[str, AfterValidator(check_name)]
HeaderValue = Annotated[str, AfterValidator(check_value)]
SecretHeaderValue = Annotated[SecretStr, AfterValidator(check_secret_value)]

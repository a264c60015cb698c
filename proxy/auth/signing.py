"""Signed requests to tool servers: the caller's identity, and an HMAC proving the proxy sent it.

For upstreams with `sign_requests: true` the proxy adds these headers (and removes any
a caller sent under the same prefix):

    x-agent-proxy-caller         caller name, percent-encoded UTF-8 (empty on `auth: none` routes)
    x-agent-proxy-key-id         the caller's key id (minted key id, JWT jti or static key id)
    x-agent-proxy-scopes         the caller's scopes, space-separated, sorted
    x-agent-proxy-timestamp      Unix time in seconds
    x-agent-proxy-signature-kid  id of the upstream's `signing_key`
    x-agent-proxy-signature      v1=<hex HMAC-SHA256(secret, string_to_sign)>

string_to_sign is these lines joined by "\n" (no trailing newline):

    agent-proxy-signature-v1
    <timestamp>
    <METHOD>
    <request target: path and query exactly as sent, still percent-encoded>
    <caller header value>
    <key id header value>
    <scopes header value>
    <hex SHA-256 of the body bytes>

A tool server recomputes it with the secret for that kid, compares in constant time and
refuses timestamps more than a few minutes away from its clock; `verify_signed_request`
does exactly that.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from multidict import CIMultiDict

from proxy.auth.config import HmacKey
from proxy.exchange import Caller
from proxy.forward.headers import drop_proxy_headers

CALLER = "x-agent-proxy-caller"
KEY_ID = "x-agent-proxy-key-id"
SCOPES = "x-agent-proxy-scopes"
TIMESTAMP = "x-agent-proxy-timestamp"
SIGNATURE_KID = "x-agent-proxy-signature-kid"
SIGNATURE = "x-agent-proxy-signature"
VERSION_LINE = "agent-proxy-signature-v1"
DEFAULT_MAX_SKEW_S = 300.0
_SIGNATURE = re.compile(r"v1=([0-9a-f]{64})")
_TIMESTAMP = re.compile(r"\d{1,12}")


class InvalidSignature(ValueError):
    """The request is not signed by a known secret, or too long ago; `reason` says which check failed."""

    def __init__(self, reason: str):
        super().__init__(f"invalid signed request: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SignedCaller:
    """Who the proxy says is calling, once the signature verified."""

    caller: str | None
    key_id: str | None
    scopes: frozenset[str]
    signature_kid: str
    timestamp: int


def string_to_sign(
    timestamp: str, method: str, target: str, caller: str, key_id: str, scopes: str, body: bytes
) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    lines = (VERSION_LINE, timestamp, method.upper(), target, caller, key_id, scopes, body_hash)
    return "\n".join(lines).encode("utf-8")


def _hmac_hex(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def request_target(url: str) -> str:
    """Path and query of a URL, as they appear on the request line."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def sign_request(
    headers: CIMultiDict[str],
    key: HmacKey,
    caller: Caller | None,
    method: str,
    url: str,
    body: bytes,
    now: float | None = None,
) -> None:
    """Add the identity and signature headers in place, replacing any a caller sent."""
    drop_proxy_headers(headers)
    name = quote(caller.name, safe=":@") if caller else ""
    key_id = caller.key_id if caller else ""
    scopes = " ".join(sorted(caller.scopes)) if caller else ""
    timestamp = str(int(time.time() if now is None else now))
    message = string_to_sign(timestamp, method, request_target(url), name, key_id, scopes, body)
    headers[CALLER] = name
    headers[KEY_ID] = key_id
    headers[SCOPES] = scopes
    headers[TIMESTAMP] = timestamp
    headers[SIGNATURE_KID] = key.id
    headers[SIGNATURE] = "v1=" + _hmac_hex(key.secret.get_secret_value().encode(), message)


def verify_signed_request(
    secrets: Mapping[str, str | bytes],
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
    now: float | None = None,
) -> SignedCaller:
    """For tool servers: who is calling, or InvalidSignature.

    `secrets` maps signing key ids to secrets; `target` is the path and query as received
    (aiohttp: `request.raw_path`; Starlette: `request.url.path` + `?` + `request.url.query`).
    """
    lower = {name.lower(): value for name, value in headers.items()}
    match = _SIGNATURE.fullmatch(lower.get(SIGNATURE, ""))
    if match is None:
        raise InvalidSignature("missing")
    secret = secrets.get(lower.get(SIGNATURE_KID, ""))
    if secret is None:
        raise InvalidSignature("unknown_kid")
    timestamp = lower.get(TIMESTAMP, "")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise InvalidSignature("missing")
    name, key_id, scopes = lower.get(CALLER, ""), lower.get(KEY_ID, ""), lower.get(SCOPES, "")
    message = string_to_sign(timestamp, method, target, name, key_id, scopes, body)
    secret_bytes = secret.encode() if isinstance(secret, str) else secret
    if not hmac.compare_digest(match.group(1), _hmac_hex(secret_bytes, message)):
        raise InvalidSignature("bad_signature")
    if abs((time.time() if now is None else now) - int(timestamp)) > max_skew_s:
        raise InvalidSignature("stale")
    return SignedCaller(
        caller=unquote(name) if name else None,
        key_id=key_id or None,
        scopes=frozenset(scopes.split()),
        signature_kid=lower[SIGNATURE_KID],
        timestamp=int(timestamp),
    )

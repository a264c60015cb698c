"""Outbound request signing, and the verifier a tool server uses."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.auth.config import HmacKey
from proxy.auth.signing import SIGNATURE, InvalidSignature, sign_request, verify_signed_request
from proxy.exchange import Caller

KEY = HmacKey(id="s1", secret="tool-secret-0123456789-0123456789-01")
SECRETS = {"s1": "tool-secret-0123456789-0123456789-01"}
CALLER = Caller("team.bot:prod/ä", "key-7", frozenset({"tools", "admin"}), "default")
NOW = 1_800_000_000
URL = "http://tool.internal:9000/base/search%2Fx?q=a%20b&n=1"
TARGET = "/base/search%2Fx?q=a%20b&n=1"


def signed(caller: Caller | None = CALLER, body: bytes = b'{"q": 1}', **headers: str) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict(headers)
    sign_request(out, KEY, caller, "POST", URL, body, now=NOW)
    return out


def test_a_signed_request_verifies_and_names_the_caller():
    who = verify_signed_request(SECRETS, "POST", TARGET, signed(), b'{"q": 1}', now=NOW + 10)
    assert (who.caller, who.key_id, who.scopes) == ("team.bot:prod/ä", "key-7", frozenset({"tools", "admin"}))
    assert (who.signature_kid, who.timestamp) == ("s1", NOW)


def test_headers_are_ascii_and_spoofed_ones_are_replaced():
    headers = signed(**{"X-Agent-Proxy-Caller": "admin", "x-agent-proxy-extra": "1", "other": "kept"})
    assert headers.getall("x-agent-proxy-caller") == ["team.bot:prod%2F%C3%A4"]
    assert "x-agent-proxy-extra" not in headers and headers["other"] == "kept"
    assert all(value.isascii() for value in headers.values())


def test_no_caller_on_auth_none_routes():
    who = verify_signed_request(SECRETS, "POST", TARGET, signed(None), b'{"q": 1}', now=NOW)
    assert who.caller is None and who.key_id is None and who.scopes == frozenset()


@pytest.mark.parametrize(
    ("method", "target", "body", "change", "reason"),
    [
        ("POST", TARGET, b'{"q": 2}', {}, "bad_signature"),
        ("PUT", TARGET, b'{"q": 1}', {}, "bad_signature"),
        ("POST", "/base/search%2Fx?q=a%20b&n=2", b'{"q": 1}', {}, "bad_signature"),
        ("POST", TARGET, b'{"q": 1}', {"x-agent-proxy-caller": "admin"}, "bad_signature"),
        ("POST", TARGET, b'{"q": 1}', {"x-agent-proxy-scopes": "admin tools root"}, "bad_signature"),
        ("POST", TARGET, b'{"q": 1}', {"x-agent-proxy-timestamp": str(NOW + 1)}, "bad_signature"),
        ("POST", TARGET, b'{"q": 1}', {"x-agent-proxy-signature-kid": "s2"}, "unknown_kid"),
        ("POST", TARGET, b'{"q": 1}', {SIGNATURE: "v1=" + "0" * 64}, "bad_signature"),
        ("POST", TARGET, b'{"q": 1}', {SIGNATURE: "v2=abc"}, "missing"),
        ("POST", TARGET, b'{"q": 1}', {"x-agent-proxy-timestamp": "soon"}, "missing"),
    ],
)
def test_tampering_is_detected(method, target, body, change, reason):
    headers = signed()
    headers.update(change)
    with pytest.raises(InvalidSignature) as info:
        verify_signed_request(SECRETS, method, target, headers, body, now=NOW)
    assert info.value.reason == reason


def test_old_signatures_are_refused():
    with pytest.raises(InvalidSignature, match="stale"):
        verify_signed_request(SECRETS, "POST", TARGET, signed(), b'{"q": 1}', now=NOW + 301)
    assert verify_signed_request(SECRETS, "POST", TARGET, signed(), b'{"q": 1}', now=NOW - 299)


def test_the_secret_may_be_bytes_and_headers_a_plain_dict():
    headers = {name.title(): value for name, value in signed().items()}
    assert verify_signed_request({"s1": SECRETS["s1"].encode()}, "post", TARGET, headers, b'{"q": 1}', now=NOW)

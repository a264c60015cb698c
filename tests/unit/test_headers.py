"""Which headers cross the proxy: hop-by-hop never, caller credentials never upstream, request ids sane."""

from __future__ import annotations

import re

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.forward.headers import HOP_BY_HOP, caller_response_headers, request_id_from, upstream_request_headers

INJECT = [("Authorization", "Bearer sk-upstream")]


def caller(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    """Headers as aiohttp hands them to the handler."""
    return CIMultiDictProxy(CIMultiDict(pairs))


def names(headers: CIMultiDict[str]) -> set[str]:
    return {name.lower() for name in headers}


def test_hop_by_hop_headers_are_not_forwarded():
    sent = caller(*((name.title(), "x") for name in HOP_BY_HOP), ("Content-Type", "application/json"))
    out = upstream_request_headers(sent, [], "rid")
    assert names(out) == {"content-type", "x-request-id"}


def test_headers_named_by_connection_are_not_forwarded():
    sent = caller(
        ("Connection", "keep-alive, X-Internal-Trace"),
        ("Connection", "x-second"),  # several Connection fields are one comma-separated list
        ("X-Internal-Trace", "secret-trace"),
        ("X-Second", "2"),
        ("X-Kept", "1"),
        ("OpenAI-Beta", "assistants=v2"),
    )
    out = upstream_request_headers(sent, [], "rid")
    assert names(out) == {"x-kept", "openai-beta", "x-request-id"}


def test_a_plain_mapping_is_handled_case_insensitively():
    out = upstream_request_headers({"Connection": "X-Drop", "X-Drop": "1", "X-Api-Key": "k", "Accept": "*/*"}, [], "r")
    assert names(out) == {"accept", "x-request-id"}


@pytest.mark.parametrize("name", ["Authorization", "authorization", "X-API-Key", "x-api-key", "api-key", "Api-Key"])
def test_caller_credentials_are_never_forwarded(name):
    out = upstream_request_headers(caller((name, "caller-secret"), ("Accept", "application/json")), [], "rid")
    assert "caller-secret" not in out.values()
    assert names(out) == {"accept", "x-request-id"}


def test_the_proxys_own_identity_headers_are_never_the_callers():
    sent = caller(("X-Agent-Proxy-Caller", "admin"), ("x-agent-proxy-signature", "v1=forged"), ("X-Agentic", "kept"))
    out = upstream_request_headers(sent, [], "r")
    assert [name.lower() for name in out] == ["x-agentic", "x-request-id"]


def test_injected_credential_wins():
    sent = caller(("Authorization", "Bearer caller-key"), ("x-api-key", "caller-key"), ("Anthropic-Version", "1"))
    out = upstream_request_headers(sent, [("x-api-key", "sk-ant-upstream"), ("anthropic-version", "2023-06-01")], "r")
    assert out.getall("x-api-key") == ["sk-ant-upstream"]
    assert out.getall("anthropic-version") == ["2023-06-01"]
    assert "authorization" not in out
    out = upstream_request_headers(sent, INJECT, "r")
    assert out.getall("authorization") == ["Bearer sk-upstream"]


def test_recomputed_headers_are_not_copied():
    sent = caller(("Host", "proxy.local"), ("Content-Length", "12"), ("Accept-Encoding", "gzip"),
                  ("X-Request-Id", "caller-id"), ("User-Agent", "OpenAI/Python 1.0"))  # fmt: skip
    out = upstream_request_headers(sent, INJECT, "proxy-id")
    assert names(out) == {"user-agent", "authorization", "x-request-id"}
    assert out.getall("x-request-id") == ["proxy-id"]


def test_repeated_end_to_end_headers_are_kept():
    out = upstream_request_headers(caller(("X-Tag", "a"), ("X-Tag", "b")), [], "r")
    assert out.getall("x-tag") == ["a", "b"]


@pytest.mark.parametrize("given", ["abc-123", "req_01HZX.9:trace", "a" * 128, "0"])
def test_a_sane_request_id_is_echoed(given):
    assert request_id_from(caller(("X-Request-Id", given))) == given


@pytest.mark.parametrize(
    "given",
    ["", "a" * 129, "has space", "semi;colon", "new\nline", "trailing\n", 'quote"', "é", "a/b", "<script>"],
)
def test_a_bad_request_id_is_replaced(given):
    made = request_id_from({"x-request-id": given})
    assert made != given and re.fullmatch(r"[0-9a-f]{32}", made)


def test_a_missing_request_id_is_made_fresh_each_time():
    assert request_id_from(caller()) != request_id_from(caller())


def test_response_headers_drop_hop_by_hop_and_recomputed():
    upstream = caller(
        ("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked"), ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"), ("Content-Length", "99"), ("Content-Encoding", "gzip"), ("Server", "nginx"),
        ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"), ("Keep-Alive", "timeout=5"),
        ("x-ratelimit-remaining-requests", "99"), ("openai-processing-ms", "12"),
    )  # fmt: skip
    out = caller_response_headers(upstream)
    assert names(out) == {"content-type", "x-ratelimit-remaining-requests", "openai-processing-ms"}


def test_upstream_request_id_comes_back_under_its_own_name():
    out = caller_response_headers(caller(("X-Request-Id", "req_upstream"), ("request-id", "req_ant")))
    assert out.getall("x-upstream-request-id") == ["req_upstream"]
    assert "x-request-id" not in out
    assert out.getall("request-id") == ["req_ant"]  # Anthropic's own header passes as is


def test_set_cookie_and_repeated_response_headers_are_kept():
    out = caller_response_headers(caller(("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")))
    assert out.getall("set-cookie") == ["a=1", "b=2"]

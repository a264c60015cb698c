"""`auth.revoked`: any jti string matches, and entries no verifier can produce are warned about."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.auth.config import AuthConfig
from proxy.auth.revocation import jti_key_id, revoked_ids, unmatchable
from proxy.forward.headers import upstream_request_headers
from proxy.policy.load import policy_from_text
from proxy.policy.summary import summarise

SHA = "a" * 64


def test_a_jti_that_is_not_a_safe_token_is_matched_by_its_hash():
    jti = "q83vEjRWeJA+/w=="
    assert jti_key_id("plain-jti.1") == "plain-jti.1"
    assert jti_key_id(jti).startswith("jti-") and len(jti_key_id(jti)) == 20
    assert jti_key_id(jti) in revoked_ids([jti])  # listed as issued
    assert jti_key_id(jti) in revoked_ids([jti_key_id(jti)])  # or as logged
    assert jti_key_id("x" * 5000) != jti_key_id("x" * 4999)


def test_entries_no_verifier_can_produce_are_warned_without_being_echoed():
    auth = AuthConfig(
        static_keys=[{"caller": "a", "id": "static-1", "sha256": SHA}],
        revoked=["static-1", "gone-key", "q83vEjRWeJA+/w==", "sk-live-pasted-by-mistake abc"],
    )
    warnings = unmatchable(auth)
    assert [w.split(" ")[0] for w in warnings] == ["auth.revoked[1]", "auth.revoked[2]", "auth.revoked[3]"]
    assert not any("gone-key" in w or "q83v" in w or "sk-live" in w for w in warnings)
    with_jwt = AuthConfig(revoked=auth.revoked, jwt={"secret": "s" * 32, "algorithms": ["HS256"]})
    assert unmatchable(with_jwt) == []  # a jti may be any string


def test_check_prints_the_warnings():
    policy = policy_from_text(
        f"""
version: 1
upstreams: {{up: {{url: "http://127.0.0.1:9", protocol: openai}}}}
routes: [{{prefix: /v1/, upstream: up}}]
auth:
  static_keys: [{{caller: a, id: static-1, sha256: {SHA}}}]
  revoked: [static-1, "base64+/="]
""",
        env={},
    )
    out = summarise(policy, "p.yaml")
    assert "warnings:\n  auth.revoked[1] (9 characters) can never match" in out and "base64" not in out


def test_forwarding_headers_in_append_mode_quote_ipv6_and_strip_mode_removes_every_one():
    caller = CIMultiDict({"Forwarded": "for=1.2.3.4", "X-Forwarded-Port": "443", "X-Real-IP": "1.2.3.4", "Host": "h"})
    appended = upstream_request_headers(caller, [], "rid", "append", "::1")
    assert appended["forwarded"] == 'for=1.2.3.4, for="[::1]"' and appended["x-forwarded-for"] == "::1"
    assert appended["x-forwarded-port"] == "443" and appended["x-forwarded-host"] == "h"
    stripped = upstream_request_headers(caller, [], "rid")
    assert not any(
        name.lower().startswith("x-forwarded") or name.lower() in ("forwarded", "x-real-ip") for name in stripped
    )

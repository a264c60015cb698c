"""The request log line: whatever a caller sends, every field from the request is bounded and clean."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.exchange import Exchange
from proxy.logs import MAX_MODEL_CHARS, logged_model, logged_path, request_fields
from proxy.policy.compile import compile_policy
from proxy.policy.load import policy_from_text

POLICY = """\
version: 1
upstreams:
  up: {url: "http://127.0.0.1:9", protocol: openai}
routes:
  - {name: health, path: /v1/health, upstream: up, auth: none}
  - {name: chat, prefix: /v1/, upstream: up, auth: none}
"""


@pytest.fixture(scope="module")
def routes():
    return compile_policy(policy_from_text(POLICY, env={})).routes


def exchange(route, path: str, body: bytes) -> Exchange:
    ex = Exchange("rid", "POST", path, "", CIMultiDictProxy(CIMultiDict()), route, route.protocol, body=body)
    ex.request_json  # noqa: B018 - parsed, as the handler does for LLM routes
    return ex


def test_paths_are_the_route_and_the_length_of_the_rest(routes):
    health, chat = routes
    assert logged_path(exchange(health, "/v1/health", b"{}")) == "/v1/health"
    assert logged_path(exchange(chat, "/v1/chat/completions", b"{}")) == "/v1/chat/completions"
    assert logged_path(exchange(chat, "/v1/", b"{}")) == "/v1/"
    assert logged_path(exchange(chat, "/v1/files/jane@corp.io", b"{}")) == "/v1/[18 bytes]"
    assert logged_path(exchange(chat, "/v1/é", b"{}")) == "/v1/[2 bytes]"


def test_models_are_cut_and_restricted():
    assert logged_model("gpt-4o-mini") == "gpt-4o-mini"
    assert logged_model("org/model:v1@rev+x") == "org/model:v1@rev+x"
    assert logged_model('a"b\n\u202e') == "a?b??"
    assert logged_model("m" * 1000) == "m" * MAX_MODEL_CHARS + "..."
    assert logged_model(["not", "a", "string"]) is None


@settings(max_examples=200, deadline=None)
@given(model=st.text(max_size=2000), rest=st.text(max_size=300))
def test_any_model_and_path_make_a_bounded_printable_line(routes, model, rest):
    chat = routes[1]
    ex = exchange(chat, "/v1/" + rest, orjson.dumps({"model": model, "messages": []}))
    fields = request_fields(ex)
    for name in ("path", "model", "method", "route", "request_id"):
        value = fields[name]
        assert value is None or (len(value) <= MAX_MODEL_CHARS + 3 and value.isprintable() and value.isascii()), name

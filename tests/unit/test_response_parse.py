"""A whole response body is parsed once for usage and redaction, and a redacted parse never stands for the original."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.exchange import Caller, Exchange
from proxy.policy.compile import compile_policy
from proxy.policy.load import policy_from_text
from proxy.safety.content import BIG_NUMBER, has_big_number

POLICY = """\
version: 1
upstreams:
  up: {{url: "http://127.0.0.1:9", protocol: openai}}
routes:
  - {{name: chat, prefix: /v1/, upstream: up, auth: none}}
stages:
  redaction: {{output: [email], action: mask, mode: {mode}}}
  usage: {{estimate: false}}
pricing:
  m: {{input: 1, output: 2}}
"""
ANSWER = {
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "write to jane.doe@acme-mail.io"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
}


def exchange(mode: str) -> tuple[Exchange, object]:
    route = compile_policy(policy_from_text(POLICY.format(mode=mode), env={})).routes[0]
    headers = CIMultiDictProxy(CIMultiDict())
    ex = Exchange("rid", "POST", "/v1/chat/completions", "", headers, route, route.protocol, caller=Caller("c", "k"))
    ex.status = 200
    ex.response_headers = CIMultiDict({"content-type": "application/json"})
    return ex, route.chain.start()


def test_the_same_bytes_are_parsed_once_and_other_bytes_afresh():
    ex, _ = exchange("enforce")
    body = orjson.dumps(ANSWER)
    first = ex.response_json(body)
    assert first == ANSWER
    assert ex.response_json(body) is first
    other = orjson.dumps({"choices": []})
    assert ex.response_json(other) == {"choices": []}
    with pytest.raises(orjson.JSONDecodeError):
        ex.response_json(b"{not json")


@pytest.mark.parametrize("mode", ["enforce", "shadow"])
def test_usage_and_redaction_read_one_parse_and_a_redacted_parse_is_let_go(mode):
    ex, run = exchange(mode)
    body = orjson.dumps(ANSWER)
    out = run.response_body(ex, body)  # usage first (it parses), then redaction
    assert ex.usage.input_tokens == 3 and ex.usage.output_tokens == 5
    if mode == "enforce":
        assert b"jane.doe@acme-mail.io" not in out
    else:
        assert out is body
    # Redaction changed the shared parse in place: whoever reads the original bytes next gets them as they are.
    assert ex.response_json(body)["choices"][0]["message"]["content"] == "write to jane.doe@acme-mail.io"


def test_a_body_with_nothing_to_redact_keeps_its_parse():
    ex, run = exchange("enforce")
    body = orjson.dumps({**ANSWER, "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}]})
    parsed = ex.response_json(body)
    assert run.response_body(ex, body) is body
    assert ex.response_json(body) is parsed


DIGIT_RUNS = st.sampled_from([b"1" * 19, b"2" * 20, b"0123456789" * 3])


@given(st.lists(st.one_of(st.binary(max_size=8), DIGIT_RUNS), max_size=12))
def test_the_fast_big_number_check_agrees_with_the_regex(parts):
    data = b"".join(parts)
    assert has_big_number(data) == (BIG_NUMBER.search(data) is not None)

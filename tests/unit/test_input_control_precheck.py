"""The cheap scan before the control-character regex never skips a body the regex would match."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from proxy.stages.input_checks import CONTROL, CONTROL_IN_JSON, _may_hold_control


@given(st.binary(max_size=64))
def test_no_match_is_skipped_in_any_bytes(raw: bytes) -> None:
    if CONTROL_IN_JSON.search(raw):
        assert _may_hold_control(raw)


@given(st.text(max_size=64))
def test_no_match_is_skipped_in_json_text(text: str) -> None:
    raw = orjson.dumps({"messages": [{"role": "user", "content": text}]})
    if CONTROL.search(text):
        assert CONTROL_IN_JSON.search(raw) and _may_hold_control(raw)


def test_a_plain_ascii_body_is_settled_without_the_regex() -> None:
    assert not _may_hold_control(b'{"model":"m","messages":[{"role":"user","content":"Say hello."}]}')
    assert _may_hold_control(b'{"content":"a\\u0007b"}')
    assert _may_hold_control('{"content":"a\u200bb"}'.encode())
    assert _may_hold_control(b'{"content":"a\x7fb"}')

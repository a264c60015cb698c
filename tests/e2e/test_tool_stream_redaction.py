"""Redaction of http and MCP streams through the real proxy: a value cut across events, at every offset,
reaches the caller masked, and the caller reads exactly the text a whole answer would give."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from proxy.protocols.sse import SSEDecoder, SSEEvent
from tests.fixtures.http import post
from tests.fixtures.sse_tool import SSETool

TEXT = "Mail john.doe@acmecorp.com, card 4111 1111 1111 1111. Bye!"
REDACTED = "Mail [EMAIL], card [CARD]. Bye!"


@pytest.fixture
def proxy(proxy_factory) -> Iterator:
    with SSETool() as tool:
        yield proxy_factory(f"""
version: 1
upstreams:
  tool: {{url: {tool.url}, protocol: http}}
  mcp-tool: {{url: {tool.url}, protocol: mcp}}
routes:
  - {{name: search, prefix: /tools/search/, upstream: tool, auth: none}}
  - {{name: files, prefix: /mcp/files, upstream: mcp-tool, auth: none}}
  - name: generate
    prefix: /tools/generate/
    upstream: tool
    auth: none
    stages: {{redaction: {{output: [email, credit_card], stream_text: [delta]}}}}
stages:
  redaction: {{output: [email, credit_card]}}
""")


def _events(url: str, events: list[dict[str, str]]) -> list[SSEEvent]:
    response = post(url, {"events": events})
    assert response.status == 200 and response.headers["content-type"].startswith("text/event-stream")
    decoder = SSEDecoder()
    return decoder.feed(response.body) + decoder.flush()


def test_http_text_cut_at_every_offset_is_masked(proxy):
    for cut in range(1, len(TEXT)):
        pieces = [TEXT[:cut], TEXT[cut:]]
        out = _events(proxy.url + "/tools/search/run", [{"event": "delta", "data": p} for p in pieces])
        assert "".join(e.data or "" for e in out) == REDACTED, cut
        assert {e.event for e in out} == {"delta"}


def test_mcp_messages_are_redacted_whole_and_keep_their_own_text(proxy):
    """A progress or log message is a complete text: values in it are masked, nothing moves to the next one."""
    log = [{"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": text}}
           for text in ("step 1 of 3", TEXT, "step 3 of 3")]  # fmt: skip
    result = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "ok"}]}}
    messages = [{"event": "message", "data": orjson.dumps(m).decode()} for m in (*log, result)]
    out = [orjson.loads(e.data) for e in _events(proxy.url + "/mcp/files", messages)]
    assert [m["params"]["data"] for m in out[:-1]] == ["step 1 of 3", REDACTED, "step 3 of 3"]
    assert out[-1] == result


def test_http_json_field_named_by_the_policy_cut_at_every_offset_is_masked(proxy):
    for cut in range(1, len(TEXT)):
        events = [{"event": "delta", "data": orjson.dumps({"seq": i, "delta": p}).decode()}
                  for i, p in enumerate((TEXT[:cut], TEXT[cut:]))]  # fmt: skip
        out = [orjson.loads(e.data) for e in _events(proxy.url + "/tools/generate/run", events)]
        assert "".join(m["delta"] for m in out) == REDACTED, cut
        assert [m["seq"] for m in out[:2]] == [0, 1]
    unnamed = [{"data": orjson.dumps({"delta": p}).decode()} for p in (TEXT[:8], TEXT[8:])]
    out = [orjson.loads(e.data) for e in _events(proxy.url + "/tools/search/run", unnamed)]
    assert "".join(m["delta"] for m in out) == "Mail joh" + "[EMAIL], card [CARD]. Bye!"  # event by event

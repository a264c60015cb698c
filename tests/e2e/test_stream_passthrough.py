"""A stream through the full chain (auth, input checks, rate limit and budget, redaction, usage) reaches the
caller as the upstream sent it, byte for byte, when nothing in it is masked; only the events a mask touches
are rewritten. The upstream here sends fixed bytes, so the two can be compared exactly."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from tests.fixtures.http import post
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.servers import ServerThread

CHAIN = """
callers:
  default: {}
  demo:
    rate_limit: {requests_per_minute: 1000, tokens_per_minute: 10000000, concurrent: 10}
    budget: {usd_per_day: 1000}
stages:
  input: {max_chars: 100000, strip_control_chars: true, check_structure: true}
  redaction: {output: [pii, secrets], action: mask}
  usage: {stream_usage: true, estimate: true}
pricing:
  gpt-4o: {input: 2.5, output: 10}
"""
BASE = {"id": "chatcmpl-fixed", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o"}
CLEAN = "The build passed on Thursday; 3 of 4 checks ran in 12 s, and Anna merged it. Thanks, team!"
ADDRESS = "Then mail jane.doe@acmecorp.com about it, please, and ask again tomorrow."


def _chunk(choice: dict, usage: object = None) -> bytes:
    return b"data: " + orjson.dumps({**BASE, "choices": [choice], "usage": usage}) + b"\n\n"


def _stream(text: str) -> list[bytes]:
    words = text.split(" ")
    pieces = [words[0], *(" " + word for word in words[1:])]
    out = [_chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})]
    out += [_chunk({"index": 0, "delta": {"content": piece}, "finish_reason": None}) for piece in pieces]
    out.append(_chunk({"index": 0, "delta": {}, "finish_reason": "stop"}))
    usage = {"prompt_tokens": 9, "completion_tokens": len(pieces), "total_tokens": 9 + len(pieces)}
    out.append(b"data: " + orjson.dumps({**BASE, "choices": [], "usage": usage}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


async def _upstream() -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in _stream(body["messages"][-1]["content"]):
            await response.write(event)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture
def proxy(proxy_factory):
    with ServerThread(_upstream, name="fixed-stream") as upstream:
        yield proxy_factory(basic_policy(upstream.url, CHAIN))


def _ask(proxy, text: str) -> list[bytes]:
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": text}],  # the upstream streams this back
        "stream": True,
        "stream_options": {"include_usage": True},  # asked by the caller: the usage stage leaves the chunks as they are
    }
    response = post(f"{proxy.openai_base_url}/chat/completions", body, {"Authorization": f"Bearer {DEMO_KEY}"})
    assert response.status == 200
    return [event + b"\n\n" for event in response.body.split(b"\n\n") if event]


def test_a_stream_with_nothing_to_mask_reaches_the_caller_byte_for_byte(proxy):
    for _ in range(2):
        assert _ask(proxy, CLEAN) == _stream(CLEAN)


def test_only_the_events_a_mask_touches_are_rewritten(proxy):
    text = f"{CLEAN} {ADDRESS}"
    sent, received = _stream(text), _ask(proxy, text)
    rewritten = [event for event in received if event not in sent]
    assert b"jane" not in b"".join(received) and b"[EMAIL]" in b"".join(rewritten)
    assert len(rewritten) <= 4  # " jane.doe@acmecorp.com", and at most what was released with it
    kept = [event for event in received if event in sent]
    assert kept == [event for event in sent if event in kept]  # in the upstream's order
    deltas = [orjson.loads(event[6:])["choices"] for event in received if event != b"data: [DONE]\n\n"]
    text_out = "".join(choices[0]["delta"].get("content") or "" for choices in deltas if choices)
    assert text_out == text.replace("jane.doe@acmecorp.com", "[EMAIL]")

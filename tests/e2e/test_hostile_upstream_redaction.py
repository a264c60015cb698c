"""A hostile upstream against a redacting route (pii + secrets, the full chain): text that never settles.

Held events are bounded (`stream_hold_events`, `stream_hold_bytes`), and so is the text each redactor
keeps back (a detector's reach). So however the upstream cuts its text, and however long it goes on,
the caller keeps receiving events, never a value that should have been masked, the proxy's memory
does not grow with the stream, the stream ends at the upstream's end or at the proxy's bound in the
protocol's own shape, and the next request is answered as usual. Each case gets a proxy process of
its own, so its peak resident memory (VmHWM) after the case, against the same figure after a short
warm-up stream, is what the case cost.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

import aiohttp
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.accounting.tokens import count_tokens
from proxy.safety.secret_detectors import MAX_SECRET
from tests.fixtures.hostile_upstream import (
    CARD_HINT,
    EMAIL,
    PROSE,
    SECRET_HINT,
    SPARSE_TEXT,
    HostileUpstream,
    huge_text,
    secret_value,
)
from tests.fixtures.proxy_server import DEMO_KEY, DEMO_KEY_SHA256, ProxyProcess, proxy_process
from tests.fixtures.waiting import wait_for

MIB = 1024 * 1024
RESPONSE_BOUND = 6 * MIB  # max_response_bytes on /v1/: where an endless stream of small events is cut
BIG_BOUND = 32 * MIB  # ...and on /big/, for streams of large events
# What a stream may add to the proxy's peak, however long it goes on: the streams here add 5-11 MB (docs/redaction.md,
# "What a stream holds"), a small fraction of the 6 and 32 MiB they run to.
GROWTH_MB = 16
# One event is held whole, and a 6 MiB one is in memory several times at once: the upstream's chunks and their join,
# its parse's text, the redacted text, the re-serialised bytes, the write to the caller (docs/forwarding.md,
# "An event's copies"). It adds 36-38 MB, about 6 times its size: it may add 7 times.
HUGE_EVENT_MIB = 6
EVENT_COPIES = 7
ANSWER_S = 60  # a client-side bound: every case ends long before it
KEY = {"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"}
ASK = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})


def policy(upstream_url: str) -> str:
    def upstream(bound: int) -> str:
        limits = f"{{max_event_bytes: {8 * MIB}, max_response_bytes: {bound}}}"
        timeouts = "{connect_s: 2, first_byte_s: 5, idle_s: 10, total_s: 300}"
        return f'{{url: "{upstream_url}", protocol: openai, timeouts: {timeouts}, limits: {limits}}}'

    return f"""
version: 1
upstreams:
  hostile: {upstream(RESPONSE_BOUND)}
  hostile-big: {upstream(BIG_BOUND)}
routes:
  - {{name: llm, prefix: /v1/, upstream: hostile}}
  - {{name: big, prefix: /big/, upstream: hostile-big, rewrite_prefix: /v1/}}
auth:
  static_keys:
    - {{caller: demo, id: demo-key, sha256: {DEMO_KEY_SHA256}}}
callers:
  default: {{}}
  demo:
    rate_limit: {{requests_per_minute: 1000, tokens_per_minute: 1000000000, concurrent: 10}}
    budget: {{usd_per_day: 1000000}}
stages:
  input: {{max_chars: 100000, strip_control_chars: true, check_structure: true}}
  redaction: {{output: [pii, secrets], action: mask}}
  usage: {{stream_usage: true, estimate: true}}
pricing:
  m: {{input: 1, output: 2}}
"""


@dataclass
class Stream:
    """What the caller read: its events, the text of its deltas, and the last event."""

    events: int = 0
    text: list[str] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)
    last: bytes = b""

    @property
    def content(self) -> str:
        return "".join(self.text)

    @property
    def error_code(self) -> str | None:
        if not self.last.startswith(b"data: {"):
            return None
        error = orjson.loads(self.last[len(b"data: ") :]).get("error")
        return error and error["code"]


async def read(proxy: ProxyProcess, script: str, route: str = "/v1/") -> Stream:
    """A raw client: every event counted, as it comes."""
    stream, rest = Stream(), b""
    timeout = aiohttp.ClientTimeout(total=ANSWER_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(f"{proxy.url}{route}{script}/chat/completions", data=ASK, headers=KEY) as response,
    ):
        assert response.status == 200
        async for piece in response.content.iter_any():
            *events, rest = (rest + piece).split(b"\n\n")
            for event in events:
                take(stream, event)
    assert rest == b"", "the stream ends on a whole event"
    return stream


def take(stream: Stream, event: bytes) -> None:
    stream.events += 1
    stream.last = event
    if not event.startswith(b"data: {"):
        return
    for choice in orjson.loads(event[len(b"data: ") :]).get("choices") or ():
        delta = choice["delta"]
        stream.text.append(delta.get("content") or "")
        stream.arguments += [call["function"].get("arguments") or "" for call in delta.get("tool_calls") or ()]


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    with HostileUpstream() as server:
        yield server


@pytest.fixture
async def proxy(hostile: HostileUpstream, tmp_path, request) -> Iterator[ProxyProcess]:
    """A proxy of the case's own, warmed up; after the case, its peak grew by less than GROWTH_MB (or, for the huge
    event, EVENT_COPIES times its size) and the next request is answered as usual."""
    huge = request.node.name == test_one_huge_event_without_a_newline.__name__
    bound = EVENT_COPIES * HUGE_EVENT_MIB if huge else GROWTH_MB  # (memory_mb counts MiB)
    with proxy_process(policy(hostile.url), tmp_path) as running:
        await answered_as_usual(running)
        await completed(running, 1)  # the estimate of its tokens loaded the tokenizer
        before = running.memory_mb()
        yield running
        await completed(running, 2)
        grew = running.memory_mb() - before
        assert grew < bound, f"the proxy's peak grew by {grew:.0f} MB (from {before:.0f} MB)"
        await answered_as_usual(running)


def metric(proxy: ProxyProcess, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{proxy.url}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def completed(proxy: ProxyProcess, requests: int) -> None:
    """Until `requests` streams have been accounted for (none of them reports usage: each is estimated)."""
    estimated = "agent_proxy_usage_estimated_requests_total"
    await asyncio.to_thread(wait_for, lambda: metric(proxy, estimated) >= requests, 60, 0.05)


async def answered_as_usual(proxy: ProxyProcess) -> None:
    stream = await read(proxy, "short-stream")
    assert stream.content == "Write to [EMAIL] today. " and stream.last == b"data: [DONE]"


def drip_seen(stream: Stream, hint: str) -> str:
    """The text after the hint, which the first event carries whole."""
    text = stream.content
    assert text.startswith(hint), text[:200]
    return text[len(hint) :]


async def test_an_endless_password_value_one_character_an_event(proxy):
    stream = await read(proxy, "drip-secret/0")
    assert stream.error_code == "upstream_response_too_large"  # the proxy's bound ends it, as an error event
    value = "".join(islice(secret_value(), MAX_SECRET * 40))
    seen = drip_seen(stream, SECRET_HINT)
    # The longest value a password can have is masked; the rest of the run is not a value, and is released.
    assert seen.startswith("[SECRET]") and value[MAX_SECRET:].startswith(seen[len("[SECRET]") :])
    assert len(seen) > MAX_SECRET * 4, "the caller keeps receiving the text"
    assert stream.events > len(seen) - MAX_SECRET - 32, "an event a character, held no longer than the bounds"


async def test_a_long_password_value_ends_with_the_upstreams_own_end(proxy):
    sent = 30_000
    stream = await read(proxy, f"drip-secret/{sent}")
    assert stream.last == b"data: [DONE]"
    value = "".join(islice(secret_value(), sent))
    assert drip_seen(stream, SECRET_HINT) == "[SECRET]" + value[MAX_SECRET:]
    assert stream.events >= sent - MAX_SECRET


async def test_digits_that_could_always_be_a_card_number(proxy):
    stream = await read(proxy, "drip-card/0")
    assert stream.error_code == "upstream_response_too_large"
    seen = drip_seen(stream, CARD_HINT)
    assert seen.count("[CARD]") > 1_000, "the caller keeps receiving the text"
    assert not re.search(r"\d{4}[ ]\d{4}[ ]\d{4}[ ]\d{4}", seen), "no whole card number reaches the caller"
    assert set(seen.split()) <= {"[CARD]", "4111", "1111"}  # a cut may leave part of one, held then dropped
    assert seen.count("[CARD]") > len(seen) // len("[CARD] ") - 8


async def test_one_huge_event_without_a_newline(proxy):
    stream = await read(proxy, f"huge-event/{HUGE_EVENT_MIB}", "/big/")
    assert stream.last == b"data: [DONE]"
    assert stream.content == huge_text(HUGE_EVENT_MIB).replace(EMAIL, "[EMAIL]")


async def test_thousands_of_events_without_text_between_the_text_events(proxy):
    gap = 300
    client = openai.AsyncOpenAI(base_url=f"{proxy.url}/v1/sparse-text/{gap}", api_key=DEMO_KEY, max_retries=0)
    chunks, text = 0, []
    async with client:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            chunks += 1
            text += [choice.delta.content or "" for choice in chunk.choices]
    assert "".join(text) == SPARSE_TEXT.replace("hunter2-Lamp-77", "[SECRET]").replace(EMAIL, "[EMAIL]")
    # Every event reaches the caller: none is dropped while text waits in front of it.
    assert chunks >= 1 + len(SPARSE_TEXT) * (gap + 1) - len("hunter2-Lamp-77") - len(EMAIL)


async def test_tool_call_arguments_that_come_back_changed_for_a_long_time(proxy):
    stream = await read(proxy, "drip-args/0", "/big/")
    assert stream.error_code == "upstream_response_too_large"
    arguments = "".join(stream.arguments)
    assert arguments.startswith('{"note": "café éx')
    assert len(arguments) > BIG_BOUND // 8 and set(arguments[len('{"note": "café ') :]) == set("éx")


async def test_a_flood_of_prose_with_no_usage_reported(proxy):
    before = metric(proxy, "agent_proxy_tokens_total", kind="output")
    stream = await read(proxy, "prose-flood/0", "/big/")
    assert stream.error_code == "upstream_response_too_large"
    text = stream.content
    assert len(text) > BIG_BOUND // 2 and text == (PROSE * (len(text) // len(PROSE) + 1))[: len(text)]
    # Its tokens are estimated from the first characters, at their rate for the rest.
    await completed(proxy, 2)
    output = metric(proxy, "agent_proxy_tokens_total", kind="output") - before
    rate = count_tokens(PROSE * 100, "m") / (len(PROSE) * 100)
    assert output == pytest.approx(len(text) * rate, rel=0.05)

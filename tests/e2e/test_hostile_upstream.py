"""A hostile or buggy upstream on a raw socket: every answer is bounded, clean, and never leaks into the next.

The proxy runs as its own process, so its peak resident memory (VmHWM) is its own; each case
asserts the caller's clean, protocol-shaped error, and the peak stays under `PEAK_RSS_MB`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import orjson
import pytest
from yarl import URL

from tests.fixtures.hostile_upstream import HostileUpstream
from tests.fixtures.proxy_server import (
    ADMIN_KEY,
    ADMIN_KEY_SHA256,
    DEMO_KEY,
    DEMO_KEY_SHA256,
    ProxyProcess,
    proxy_process,
)

PEAK_RSS_MB = 250  # the proxy starts at about 70 MB; every bound below is a few MiB
ANSWER_S = 20  # a client-side bound: every case ends long before it
KEY = {"authorization": f"Bearer {DEMO_KEY}"}
CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
STREAM = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
MIB = 1024 * 1024
LIMITS = "{max_body_bytes: 4194304, max_event_bytes: 1048576, max_response_bytes: 67108864}"
TIMEOUTS = "{connect_s: 2, first_byte_s: 5, idle_s: 5, total_s: 30}"
# Every case fails on purpose: a breaker would answer 503 in their place.
UPSTREAM = f"timeouts: {TIMEOUTS}, limits: {LIMITS}, circuit_breaker: {{enabled: false}}"


def policy(upstream_url: str) -> str:
    return f"""
version: 1
upstreams:
  hostile: {{url: "{upstream_url}", protocol: openai, {UPSTREAM}}}
  hostile-tool: {{url: "{upstream_url}", protocol: http, {UPSTREAM}}}
routes:
  - {{name: tool, prefix: /tools/, upstream: hostile-tool, rewrite_prefix: /v1/, stages: {{usage: {{mode: "off"}}}}}}
  - {{name: llm, prefix: /v1/, upstream: hostile}}
auth:
  static_keys:
    - {{caller: demo, id: demo-key, sha256: {DEMO_KEY_SHA256}}}
    - {{caller: ops, id: admin-key, sha256: {ADMIN_KEY_SHA256}, scopes: [admin]}}
"""


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    with HostileUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(hostile: HostileUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    with proxy_process(policy(hostile.url), tmp_path_factory.mktemp("hostile")) as running:
        yield running


@pytest.fixture(autouse=True)
def bounded_memory(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "proxy" in request.fixturenames:
        peak = request.getfixturevalue("proxy").memory_mb()
        assert peak < PEAK_RSS_MB, f"the proxy peaked at {peak:.0f} MB"


async def call(proxy: ProxyProcess, path: str, body: bytes = CHAT) -> tuple[int, dict[str, str], bytes]:
    """One request; the body as far as it came (a cut connection ends it)."""
    headers = {**KEY, "content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=ANSWER_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(URL(proxy.url + path, encoded=True), data=body, headers=headers) as response,
    ):
        parts = []
        try:
            async for piece in response.content.iter_any():
                parts.append(piece)
        except aiohttp.ClientPayloadError:
            pass
        return response.status, dict(response.headers), b"".join(parts)


def error_code(body: bytes) -> str:
    return orjson.loads(body)["error"]["code"]


def last_event_code(body: bytes) -> str:
    last = body.strip().split(b"\n\n")[-1]
    assert last.startswith(b"data: "), last[:200]
    return orjson.loads(last[len(b"data: ") :])["error"]["code"]


async def test_an_endless_body_on_an_observed_route_is_cut_at_its_bound(proxy):
    status, _, body = await call(proxy, "/v1/endless-json/chat/completions")
    assert status == 502 and error_code(body) == "upstream_body_too_large"


async def test_a_gzip_bomb_never_inflates_past_its_bound(proxy):
    status, _, body = await call(proxy, "/v1/bomb-json/chat/completions")
    assert status == 502 and error_code(body) in ("upstream_body_too_large", "upstream_inflation_too_high")


async def test_a_gzip_bomb_on_a_pass_through_route_is_cut_while_it_streams(proxy):
    status, _, body = await call(proxy, "/tools/bomb-json/x")
    assert status == 200 and len(body) < 16 * MIB  # cut at the inflation ratio, a few MiB in


async def test_a_gzip_bomb_in_a_stream_ends_it_with_the_protocols_error_event(proxy):
    status, _, body = await call(proxy, "/v1/bomb-sse/chat/completions", STREAM)
    assert status == 200 and last_event_code(body) == "upstream_inflation_too_high"


async def test_endless_response_headers_are_a_clean_502(proxy):
    status, _, body = await call(proxy, "/v1/endless-headers/chat/completions")
    assert status == 502 and error_code(body) == "upstream_bad_response"


async def test_a_huge_header_value_is_a_clean_502(proxy):
    status, _, body = await call(proxy, "/v1/huge-header/chat/completions")
    assert status == 502 and error_code(body) == "upstream_bad_response"


async def test_an_event_that_never_ends_ends_the_stream_with_an_error_event(proxy):
    status, _, body = await call(proxy, "/v1/endless-event/chat/completions", STREAM)
    assert status == 200 and last_event_code(body) == "upstream_event_too_large"


async def test_an_endless_pass_through_answer_is_cut_at_max_response_bytes(proxy):
    status, _, body = await call(proxy, "/tools/endless-json/x")
    assert status == 200 and 60 * MIB < len(body) <= 64 * MIB + 64 * 1024


async def test_an_upgrade_nobody_asked_for_is_a_clean_502(proxy):
    status, _, body = await call(proxy, "/v1/switching/chat/completions")
    assert status == 502 and error_code(body) == "upstream_bad_response"


async def test_a_body_cut_mid_chunk_is_a_clean_502(proxy):
    status, _, body = await call(proxy, "/v1/cut-mid-chunk/chat/completions")
    assert status == 502 and error_code(body) == "upstream_stream_broken"


async def test_a_forged_head_after_an_answer_never_reaches_the_next_request(proxy):
    for _ in range(3):
        status, headers, _ = await call(proxy, "/v1/trailing-head/chat/completions")
        assert status == 200 and "x-forged" not in headers
        status, headers, body = await call(proxy, "/v1/ok/chat/completions")
        assert status == 201 and "x-forged" not in headers
        assert orjson.loads(body) == {"own": "/v1/ok/chat/completions"}


async def test_a_late_stray_answer_never_reaches_the_next_request(proxy, hostile):
    hostile.stray_sent.clear()
    status, _, _ = await call(proxy, "/v1/late-stray/chat/completions")
    assert status == 200
    await asyncio.to_thread(hostile.stray_sent.wait, 5)
    status, headers, body = await call(proxy, "/tools/ok/x")
    assert status == 201 and "x-forged" not in headers
    assert orjson.loads(body) == {"own": "/v1/ok/x"}


QUERIES = [
    "q=C%23sharp&page=2",
    "s=a%20b",
    "p=%2F..%2Fetc",
    "x=%0d%0aHost:%20evil",
    "plus=a+b&amp=%26",
    "u=%C3%A9%E2%82%AC",
    "empty=&flag",
]


@pytest.mark.parametrize("query", QUERIES)
async def test_the_query_string_arrives_exactly_as_the_caller_sent_it(proxy, hostile, query):
    hostile.targets.clear()
    status, _, _ = await call(proxy, f"/tools/echo-target/search?{query}")
    assert status == 200
    assert hostile.targets == [f"/v1/echo-target/search?{query}".encode()]


async def test_after_all_of_it_the_breakers_hold_nothing_and_every_bound_was_counted(proxy):
    async with (
        aiohttp.ClientSession() as session,
        session.get(proxy.url + "/admin/status", headers={"authorization": f"Bearer {ADMIN_KEY}"}) as response,
    ):
        status = await response.json()
    for row in status["circuit_breakers"]:
        assert row["in_flight"] == 0 and row["probes_in_flight"] == 0, row
    assert proxy.process.poll() is None
    async with aiohttp.ClientSession() as session, session.get(proxy.url + "/metrics") as response:
        metrics = await response.text()
    for kind in ("upstream_limit", "upstream_protocol"):
        assert f'agent_proxy_errors_total{{kind="{kind}",source="upstream"}}' in metrics, "each bound is counted"

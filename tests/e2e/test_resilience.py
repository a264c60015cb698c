"""Resilient forwarding through the real SDKs (their own retries off) against the fake upstream's faults.

Attempts are counted at the fake upstream; breaker states are read from /admin/status and
the metrics. Where a state changes with time (recovery), a bounded poll waits for it.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from textwrap import dedent, indent

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from proxy.mock_upstream.text import answer_words, word_deltas
from tests.fixtures.fake_upstream import FakeUpstream
from tests.fixtures.http import request
from tests.fixtures.proxy_server import ADMIN_KEY, ADMIN_KEY_SHA256, DEMO_KEY, DEMO_KEY_SHA256
from tests.fixtures.servers import ServerThread, free_port
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "hi"}]
ANSWER = "".join(word_deltas(answer_words("hi", 12)))
CHAT = "/v1/chat/completions"
TIMEOUTS = "{connect_s: 2, first_byte_s: 5, idle_s: 5, total_s: 30}"
FAST_RETRIES = "retries: {{attempts: {n}, backoff_base_s: 0.01, backoff_max_s: 0.05{on}}}"


def retries(n: int, on: str = "") -> str:
    return FAST_RETRIES.format(n=n, on=f", on: [{on}]" if on else "")


def policy(
    url: str,
    upstream: str = "",
    route: str = "",
    backup_url: str | None = None,
    timeouts: str = TIMEOUTS,
    extra: str = "",
) -> str:
    """Primary and backup upstreams for each protocol, both with `upstream`; `{p}` in `route` is the protocol."""
    ups, routes = [], []
    for p in ("openai", "anthropic"):
        ups.append(f"  primary-{p}:\n    url: {url}\n    protocol: {p}\n    timeouts: {timeouts}\n")
        ups.append(indent(dedent(upstream).replace("{p}", p), "    ") + "\n" if upstream else "")
        ups.append(f"  backup-{p}:\n    url: {backup_url or url}\n    protocol: {p}\n    timeouts: {timeouts}\n")
        ups.append(indent(dedent(upstream).replace("{p}", p), "    ") + "\n" if upstream else "")
    for name, prefix, p in (("anthropic", "/v1/messages", "anthropic"), ("openai", "/v1/", "openai")):
        routes.append(f"  - name: {name}\n    prefix: {prefix}\n    upstream: primary-{p}\n")
        routes.append(indent(dedent(route).replace("{p}", p), "    ") + "\n" if route else "")
    return (
        "version: 1\nupstreams:\n"
        + "".join(ups)
        + "routes:\n"
        + "".join(routes)
        + f"""auth:
  static_keys:
    - {{caller: demo, id: demo-key, sha256: {DEMO_KEY_SHA256}}}
    - {{caller: ops, id: admin-key, sha256: {ADMIN_KEY_SHA256}, scopes: [admin]}}
{extra}"""
    )


def oai(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0, timeout=10)


def claude(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0, timeout=10)


def chat(proxy, **kwargs):
    return oai(proxy).chat.completions.create(model="gpt-4o", messages=MESSAGES, **kwargs)


def breaker(proxy, upstream: str) -> dict:
    status, body = proxy.get("/admin/status", {"authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 200
    [row] = [r for r in orjson.loads(body)["circuit_breakers"] if r["upstream"] == upstream]
    return row


@pytest.fixture
def backup():
    with FakeUpstream() as fake:
        yield fake


# ---- circuit breaker -----------------------------------------------------------------------------------------------


def test_a_5xx_burst_opens_the_breaker_and_later_requests_fail_fast(proxy_factory, fake_upstream):
    proxy = proxy_factory(policy(fake_upstream.url, upstream="circuit_breaker: {failure_threshold: 3}"))
    fake_upstream.behaviour.fault = "status_500"
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as err:
            chat(proxy)
        assert err.value.status_code == 500  # the upstream's own answer, passed on
    assert fake_upstream.count(CHAT) == 3
    with pytest.raises(openai.InternalServerError) as err:
        chat(proxy)
    assert err.value.status_code == 503 and err.value.code == "circuit_open"
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 30
    assert fake_upstream.count(CHAT) == 3, "an open breaker sends nothing upstream"
    labels = {"upstream": "primary-openai", "endpoint": fake_upstream.url}
    assert proxy.metric("agent_proxy_circuit_state", labels) == 2
    assert proxy.metric("agent_proxy_circuit_transitions_total", {**labels, "to": "open"}) == 1
    row = breaker(proxy, "primary-openai")
    assert row["state"] == "open" and row["in_flight"] == 0
    # Breakers are per upstream endpoint: the Anthropic upstream still forwards (and gets the 500).
    assert breaker(proxy, "primary-anthropic")["state"] == "closed"
    with pytest.raises(anthropic.InternalServerError) as aerr:
        claude(proxy).messages.create(model="claude-mock-1", max_tokens=20, messages=MESSAGES)
    assert aerr.value.status_code == 500


def test_caller_errors_never_open_the_breaker(proxy_factory, fake_upstream):
    proxy = proxy_factory(policy(fake_upstream.url, upstream="circuit_breaker: {failure_threshold: 1}"))
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            oai(proxy).chat.completions.create(model="gpt-4o", messages="not a list")  # type: ignore[arg-type]
    assert breaker(proxy, "primary-openai")["state"] == "closed"
    assert chat(proxy).choices[0].message.content == ANSWER


def test_open_breaker_and_spent_retries_go_to_the_fallback_with_its_model(proxy_factory, fake_upstream, backup):
    upstream = f"circuit_breaker: {{failure_threshold: 2}}\n{retries(2, '500')}"
    route = "fallbacks: [{upstream: backup-{p}, model: llama3}]"
    proxy = proxy_factory(policy(fake_upstream.url, upstream, route, backup_url=backup.url))
    fake_upstream.behaviour.fault = "status_500"

    raw = oai(proxy).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.headers["x-agent-proxy-upstream"] == "backup-openai"
    completion = raw.parse()
    assert completion.choices[0].message.content == ANSWER and completion.model == "llama3"
    assert fake_upstream.count(CHAT) == 2 and backup.count(CHAT) == 1  # retries spent, then the fallback
    assert backup.last(CHAT).json()["model"] == "llama3"
    assert breaker(proxy, "primary-openai")["state"] == "open"

    raw = oai(proxy).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert raw.headers["x-agent-proxy-upstream"] == "backup-openai"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == ANSWER
    assert fake_upstream.count(CHAT) == 2 and backup.count(CHAT) == 2  # open: straight to the fallback
    assert proxy.metric("agent_proxy_fallbacks_total", {"route": "openai", "upstream": "backup-openai"}) == 2

    message = claude(proxy).messages.create(model="claude-mock-1", max_tokens=20, messages=MESSAGES)
    assert message.content[0].text == ANSWER and message.model == "llama3"


def test_after_the_recovery_time_one_probe_closes_the_breaker(proxy_factory, fake_upstream):
    upstream = "circuit_breaker: {failure_threshold: 1, recovery_timeout_s: 0.2}"
    proxy = proxy_factory(policy(fake_upstream.url, upstream))
    fake_upstream.behaviour.fault, fake_upstream.behaviour.fault_times = "status_503", 1
    with pytest.raises(openai.InternalServerError):
        chat(proxy)
    with pytest.raises(openai.InternalServerError) as err:
        chat(proxy)
    assert err.value.status_code == 503 and err.value.code == "circuit_open"
    assert fake_upstream.count(CHAT) == 1
    wait_for(lambda: breaker(proxy, "primary-openai")["state"] == "half_open", timeout=5)
    assert chat(proxy).choices[0].message.content == ANSWER
    assert fake_upstream.count(CHAT) == 2
    assert breaker(proxy, "primary-openai")["state"] == "closed"
    labels = {"upstream": "primary-openai", "endpoint": fake_upstream.url}
    assert proxy.metric("agent_proxy_circuit_state", labels) == 0
    for to in ("open", "half_open", "closed"):
        assert proxy.metric("agent_proxy_circuit_transitions_total", {**labels, "to": to}) == 1


def test_half_open_sends_at_most_max_calls_probes(proxy_factory, fake_upstream):
    upstream = "circuit_breaker: {failure_threshold: 1, recovery_timeout_s: 0.2, half_open_max_calls: 2}"
    proxy = proxy_factory(policy(fake_upstream.url, upstream))
    fake_upstream.behaviour.fault, fake_upstream.behaviour.fault_times = "status_500", 1
    with pytest.raises(openai.InternalServerError):
        chat(proxy)
    # Probes answer slowly, so all eight requests arrive while the two probes are still running.
    fake_upstream.behaviour.fault, fake_upstream.behaviour.delay_s = "slow_first_byte", 1.0
    wait_for(lambda: breaker(proxy, "primary-openai")["state"] == "half_open", timeout=5)

    def one(_: int) -> int:
        try:
            chat(proxy)
            return 200
        except openai.APIStatusError as err:
            return err.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(one, range(8)))
    assert statuses == [200, 200] + [503] * 6
    assert fake_upstream.count(CHAT) == 1 + 2
    assert breaker(proxy, "primary-openai")["state"] == "closed"


# ---- retries -------------------------------------------------------------------------------------------------------


def test_attempts_never_exceed_the_policy(proxy_factory, fake_upstream):
    proxy = proxy_factory(policy(fake_upstream.url, retries(3)))
    fake_upstream.behaviour.fault = "status_500"
    with pytest.raises(openai.InternalServerError) as err:
        chat(proxy)
    assert err.value.status_code == 500
    assert fake_upstream.count(CHAT) == 3
    assert proxy.metric("agent_proxy_upstream_retries_total", {"upstream": "primary-openai", "reason": "500"}) == 2
    fake_upstream.reset()
    fake_upstream.behaviour.fault = "status_503"
    with pytest.raises(anthropic.InternalServerError):
        claude(proxy).messages.create(model="claude-mock-1", max_tokens=20, messages=MESSAGES)
    assert fake_upstream.count("/v1/messages") == 3


def test_a_transient_failure_is_retried_and_the_caller_never_sees_it(proxy_factory, fake_upstream):
    proxy = proxy_factory(policy(fake_upstream.url, retries(3)))
    for fault in ("status_500", "reset", "status_429"):
        fake_upstream.reset()
        fake_upstream.behaviour.fault, fake_upstream.behaviour.fault_times = fault, 2
        stream = chat(proxy, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ANSWER
        assert fake_upstream.count(CHAT) == 3, fault


def test_statuses_not_listed_are_not_retried(proxy_factory, fake_upstream):
    proxy = proxy_factory(policy(fake_upstream.url, retries(3, "503, connect_error")))
    fake_upstream.behaviour.fault = "status_500"
    with pytest.raises(openai.InternalServerError):
        chat(proxy)
    assert fake_upstream.count(CHAT) == 1


def test_retry_after_from_the_upstream_is_honoured(proxy_factory, fake_upstream):
    proxy = proxy_factory(policy(fake_upstream.url, retries(2)))
    behaviour = fake_upstream.behaviour
    behaviour.fault, behaviour.fault_times, behaviour.retry_after = "status_429", 1, "1"
    started = time.monotonic()
    assert chat(proxy).choices[0].message.content == ANSWER
    assert time.monotonic() - started >= 0.95  # backoff alone would have waited at most 0.01 s
    assert fake_upstream.count(CHAT) == 2
    # A retry-after beyond the request's deadline cannot be honoured: the caller gets the 429 at once.
    fake_upstream.reset()
    behaviour.fault, behaviour.retry_after = "status_429", "3600"
    with pytest.raises(openai.RateLimitError) as err:
        chat(proxy)
    assert err.value.response.headers["retry-after"] == "3600"
    assert fake_upstream.count(CHAT) == 1


def test_a_short_body_cut_before_it_was_whole_is_retried(proxy_factory, fake_upstream):
    """Nothing reached the caller yet: the proxy reads a short body whole before accepting the answer."""
    proxy = proxy_factory(policy(fake_upstream.url, retries(3)))
    fake_upstream.behaviour.fault, fake_upstream.behaviour.fault_times = "cut_stream", 1
    assert chat(proxy).choices[0].message.content == ANSWER
    assert fake_upstream.count(CHAT) == 2
    assert proxy.metric("agent_proxy_upstream_retries_total", {"upstream": "primary-openai", "reason": "broken_body"})
    assert breaker(proxy, "primary-openai")["consecutive_failures"] == 0  # the retry succeeded: the count restarts
    fake_upstream.behaviour.fault = "cut_stream"  # every attempt cut: the caller gets the error once retries are spent
    with pytest.raises(openai.APIStatusError) as err:
        chat(proxy)
    assert err.value.status_code == 502 and err.value.code == "upstream_stream_broken"
    assert fake_upstream.count(CHAT) == 5


def test_stream_cut_after_the_first_events_is_not_retried(proxy_factory, fake_upstream):
    proxy = proxy_factory(policy(fake_upstream.url, retries(3)))
    fake_upstream.behaviour.fault = "cut_stream"
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in chat(proxy, stream=True):
            received.append(chunk)
    assert received and "broke" in str(err.value)
    assert fake_upstream.count(CHAT) == 1
    with (
        pytest.raises(anthropic.APIStatusError),
        claude(proxy).messages.stream(model="claude-mock-1", max_tokens=50, messages=MESSAGES) as stream,
    ):
        for _ in stream:
            pass
    assert fake_upstream.count("/v1/messages") == 1
    assert breaker(proxy, "primary-openai")["consecutive_failures"] == 1  # a broken stream counts against it


TOOLS = """
  tool-echo:
    url: {url}
    protocol: http
    retries: {{attempts: 3, backoff_base_s: 0.01, on: [500]}}
    circuit_breaker: {{enabled: false}}
"""
TOOL_ROUTES = """
  - {{name: tools-safe, prefix: /tools/safe/, upstream: tool-echo, rewrite_prefix: /tools/echo/, retry_unsafe: true}}
  - {{name: tools, prefix: /tools/, upstream: tool-echo}}
"""


def test_tool_routes_retry_only_idempotent_methods_unless_marked_safe(proxy_factory, fake_upstream):
    text = policy(fake_upstream.url).replace("routes:\n", "routes:\n" + TOOL_ROUTES.format(), 1)
    proxy = proxy_factory(text.replace("upstreams:\n", "upstreams:" + TOOLS.format(url=fake_upstream.url), 1))
    headers = {"authorization": f"Bearer {DEMO_KEY}", "x-mock-fault": "status_500"}
    for method, path, expected in (
        ("GET", "/tools/echo/a", 3),
        ("POST", "/tools/echo/b", 1),
        ("POST", "/tools/safe/c", 3),
    ):
        response = request(method, proxy.url + path, body={"q": 1} if method == "POST" else None, headers=headers)
        assert response.status == 500
        seen = sum(1 for r in fake_upstream.requests if r.path == "/tools/echo/" + path[-1])
        assert seen == expected, (method, path)


# ---- timeouts ------------------------------------------------------------------------------------------------------


def test_a_hanging_upstream_gives_504_within_the_deadline(proxy_factory, fake_upstream):
    timeouts = "{connect_s: 1, first_byte_s: 0.2, idle_s: 5, total_s: 1.5}"
    proxy = proxy_factory(policy(fake_upstream.url, retries(3, "timeout"), timeouts=timeouts))
    fake_upstream.behaviour.fault = "hang"
    with pytest.raises(openai.APIStatusError) as err:  # the SDK's own 10 s timeout would raise APITimeoutError
        chat(proxy)
    assert err.value.status_code == 504 and err.value.code == "upstream_timeout"
    assert 1 <= fake_upstream.count(CHAT) <= 3
    with pytest.raises(anthropic.APIStatusError) as aerr:
        claude(proxy).messages.create(model="claude-mock-1", max_tokens=20, messages=MESSAGES)
    assert aerr.value.status_code == 504 and aerr.value.body["error"]["type"] == "timeout_error"


async def _stalling_app() -> web.Application:
    async def stall(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        delta = {"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}
        first = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [delta]}
        await out.write(b"data: " + orjson.dumps(first) + b"\n\n")
        await asyncio.Event().wait()  # cancelled when the proxy gives up and closes the connection
        return out

    app = web.Application()
    app.router.add_post(CHAT, stall)
    return app


def test_an_idle_stream_is_ended_cleanly_and_counts_against_the_endpoint(proxy_factory):
    with ServerThread(_stalling_app, runner_kwargs={"handler_cancellation": True}, name="stalling") as stalling:
        timeouts = "{connect_s: 1, first_byte_s: 2, idle_s: 0.3, total_s: 10}"
        proxy = proxy_factory(policy(stalling.url, retries(3), timeouts=timeouts))
        received = []
        with pytest.raises(openai.APIError) as err:
            for chunk in chat(proxy, stream=True):
                received.append(chunk.choices[0].delta.content)
        assert received == ["Hel"] and "stopped sending" in str(err.value)
        assert breaker(proxy, "primary-openai")["consecutive_failures"] == 1


def test_a_stream_still_going_at_the_deadline_is_ended_cleanly(proxy_factory, fake_upstream):
    timeouts = "{connect_s: 1, first_byte_s: 2, idle_s: 5, total_s: 0.6}"  # each gap is short, the whole is long
    proxy = proxy_factory(policy(fake_upstream.url, retries(1), timeouts=timeouts))
    paced = {"x-mock-reply-words": "200", "x-mock-event-interval-ms": "20"}  # about 4 s in all
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in chat(proxy, stream=True, extra_headers=paced):
            received.append(chunk)
    assert 3 < len(received) < 200 and "stopped sending" in str(err.value)


# ---- degraded replies and what everything-failed looks like --------------------------------------------------------


UNAVAILABLE = "The assistant is unavailable right now."
DEGRADED = """
degraded:
  upstream_error: "The assistant is unavailable right now."
  rate_limited: "The assistant is busy; try again shortly."
"""


def test_degraded_replies_look_like_normal_answers(proxy_factory, fake_upstream):
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = proxy_factory(policy(dead, retries(2), DEGRADED))
    raw = oai(proxy).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.headers["x-agent-proxy-degraded"] == "upstream_error"
    completion = raw.parse()
    assert completion.choices[0].message.content == "The assistant is unavailable right now."
    assert completion.model == "gpt-4o" and completion.choices[0].finish_reason == "stop"
    stream = chat(proxy, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == UNAVAILABLE
    message = claude(proxy).messages.create(model="claude-mock-1", max_tokens=20, messages=MESSAGES)
    assert message.content[0].text == "The assistant is unavailable right now." and message.stop_reason == "end_turn"
    with claude(proxy).messages.stream(model="claude-mock-1", max_tokens=20, messages=MESSAGES) as stream:
        assert stream.get_final_text() == "The assistant is unavailable right now."
    labels = {"route": "openai", "kind": "upstream_error"}
    assert proxy.metric("agent_proxy_degraded_replies_total", labels) == 2


def test_degraded_reply_by_kind_and_errors_where_none_is_configured(proxy_factory, fake_upstream):
    timeouts = "{connect_s: 1, first_byte_s: 0.2, idle_s: 5, total_s: 5}"
    proxy = proxy_factory(policy(fake_upstream.url, retries(2), DEGRADED, timeouts=timeouts))
    fake_upstream.behaviour.fault = "status_429"
    raw = oai(proxy).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.headers["x-agent-proxy-degraded"] == "rate_limited"
    assert raw.parse().choices[0].message.content == "The assistant is busy; try again shortly."
    assert fake_upstream.count(CHAT) == 2
    fake_upstream.behaviour.fault = "hang"  # no `timeout` message configured: the 504 error
    with pytest.raises(openai.APIStatusError) as err:
        chat(proxy)
    assert err.value.status_code == 504
    fake_upstream.behaviour.fault = None
    with pytest.raises(openai.InternalServerError) as err:  # embeddings have no chat shape to degrade into
        oai(proxy).embeddings.create(model="e", input="x", extra_headers={"x-mock-fault": "status_500"})
    assert err.value.status_code == 500 and "x-agent-proxy-degraded" not in err.value.response.headers


def test_everything_failing_without_degraded_replies_is_503_with_retry_after(proxy_factory, backup):
    dead = f"http://127.0.0.1:{free_port()}"
    upstream = f"circuit_breaker: {{failure_threshold: 1}}\n{retries(1)}"
    proxy = proxy_factory(policy(dead, upstream, "fallbacks: [backup-{p}]", backup_url=dead))
    with pytest.raises(openai.APIStatusError) as err:
        chat(proxy)
    assert err.value.status_code == 502  # both were tried: the connection failures are what the caller learns
    with pytest.raises(openai.APIStatusError) as err:
        chat(proxy)
    assert err.value.status_code == 503 and int(err.value.response.headers["retry-after"]) >= 1
    with pytest.raises(anthropic.APIStatusError) as aerr:
        claude(proxy).messages.create(model="claude-mock-1", max_tokens=20, messages=MESSAGES)
    assert aerr.value.status_code == 502
    with pytest.raises(anthropic.APIStatusError) as aerr:
        claude(proxy).messages.create(model="claude-mock-1", max_tokens=20, messages=MESSAGES)
    assert aerr.value.status_code == 503 and aerr.value.body["error"]["type"] == "overloaded_error"


# ---- several endpoints ---------------------------------------------------------------------------------------------


def test_endpoints_are_balanced_and_an_open_one_is_skipped(proxy_factory, fake_upstream, backup):
    text = policy(fake_upstream.url, f"circuit_breaker: {{failure_threshold: 1}}\n{retries(2, '500')}")
    single = f"primary-openai:\n    url: {fake_upstream.url}"
    text = text.replace(single, f"primary-openai:\n    endpoints: [{fake_upstream.url}, {backup.url}]")
    proxy = proxy_factory(text)
    for _ in range(6):
        assert chat(proxy).choices[0].message.content == ANSWER
    assert fake_upstream.count(CHAT) == 3 and backup.count(CHAT) == 3
    backup.behaviour.fault = "status_500"
    for _ in range(4):
        raw = oai(proxy).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        assert raw.parse().choices[0].message.content == ANSWER
        assert raw.headers["x-agent-proxy-upstream"] == "primary-openai"
    assert backup.count(CHAT) == 4, "one failure opened its breaker; the retry went to the other endpoint"
    assert fake_upstream.count(CHAT) == 3 + 4
    _, body = proxy.get("/admin/status", {"authorization": f"Bearer {ADMIN_KEY}"})
    rows = {r["endpoint"]: r for r in orjson.loads(body)["circuit_breakers"] if r["upstream"] == "primary-openai"}
    assert rows[backup.url]["state"] == "open" and rows[fake_upstream.url]["state"] == "closed"

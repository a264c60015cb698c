"""The response cache through real sockets and the real SDKs: hits, misses, scopes, streams, expiry, accounting."""

from __future__ import annotations

import anthropic
import openai
import pytest

from proxy.app_keys import SERVICES
from tests.fixtures.http import request
from tests.fixtures.ledger import wait_rows
from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

QUESTION = [{"role": "user", "content": "what is the capital of France?"}]
CHAT = "/v1/chat/completions"


def cache_policy(upstream_url: str, cache: str = "{}", extra: str = "") -> str:
    return basic_policy(upstream_url, f"stages:\n  cache: {cache}\n{extra}")


@pytest.fixture
def proxy(proxy_factory, fake_upstream):
    return proxy_factory(cache_policy(fake_upstream.url))


def oai(proxy, key: str = DEMO_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=key, max_retries=0)


def claude(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0)


def stored(proxy, route: str = "openai") -> float:
    return proxy.metric("agent_proxy_cache_stored_total", {"route": route})


def lookups(proxy, result: str, route: str = "openai") -> float:
    return proxy.metric("agent_proxy_cache_lookups_total", {"route": route, "result": result})


def post(proxy, key: str = DEMO_KEY, headers: dict[str, str] | None = None, **body):
    """A raw chat request."""
    payload = {"model": "gpt-4o-mini", "messages": QUESTION, **body}
    return request("POST", proxy.url + CHAT, payload, headers={"authorization": f"Bearer {key}", **(headers or {})})


def ask(proxy, key: str = DEMO_KEY, headers: dict[str, str] | None = None, **body):
    """A raw chat request; waits until a miss's answer is stored, so the next identical one can hit."""
    before = stored(proxy)
    response = post(proxy, key, headers, **body)
    if response.headers.get("x-cache") == "MISS" and response.status == 200:
        wait_for(lambda: stored(proxy) > before)
    return response


def test_a_repeated_request_is_served_from_the_cache_with_a_fresh_id(proxy, fake_upstream):
    client = oai(proxy)
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    assert first.headers["x-cache"] == "MISS"
    wait_for(lambda: stored(proxy) == 1)
    second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION, user="u-2")
    assert second.headers["x-cache"] == "HIT"
    a, b = first.parse(), second.parse()
    assert b.choices[0].message.content == a.choices[0].message.content
    assert b.usage.completion_tokens == a.usage.completion_tokens
    assert b.id != a.id and b.id.startswith("chatcmpl-")
    assert fake_upstream.count(CHAT) == 1
    assert lookups(proxy, "hit") == 1 and lookups(proxy, "miss") == 1


def test_two_callers_never_share_under_scope_caller(proxy, fake_upstream):
    assert ask(proxy, DEMO_KEY).headers["x-cache"] == "MISS"
    assert ask(proxy, ADMIN_KEY).headers["x-cache"] == "MISS"
    assert ask(proxy, DEMO_KEY).headers["x-cache"] == "HIT"
    assert ask(proxy, ADMIN_KEY).headers["x-cache"] == "HIT"
    assert fake_upstream.count(CHAT) == 2


def test_scope_team_shares_between_the_callers_of_one_profile(proxy_factory, fake_upstream):
    proxy = proxy_factory(cache_policy(fake_upstream.url, "{scope: team}"))
    assert ask(proxy, DEMO_KEY).headers["x-cache"] == "MISS"
    assert ask(proxy, ADMIN_KEY).headers["x-cache"] == "HIT"  # both callers are of the `default` profile
    assert fake_upstream.count(CHAT) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "system", "content": "answer in French"}, *QUESTION]},
        {"model": "gpt-4o"},
        {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]},
        {"temperature": 0.2},
        {"response_format": {"type": "json_object"}},
        {"max_tokens": 7},
    ],
    ids=["system_prompt", "model", "tools", "temperature", "response_format", "max_tokens"],
)
def test_a_changed_request_is_a_miss(proxy, fake_upstream, change):
    assert ask(proxy).headers["x-cache"] == "MISS"
    assert ask(proxy, **change).headers["x-cache"] == "MISS"
    assert fake_upstream.count(CHAT) == 2


def test_stream_flag_and_user_are_not_part_of_the_key(proxy, fake_upstream):
    assert ask(proxy, user="a", stream=True).headers["x-cache"] == "MISS"
    assert ask(proxy, user="b").headers["x-cache"] == "HIT"
    assert fake_upstream.count(CHAT) == 1


@pytest.mark.parametrize("header", ["no-cache", "no-store", "max-age=0, No-Store"])
def test_cache_control_from_the_caller_bypasses(proxy, fake_upstream, header):
    assert ask(proxy).headers["x-cache"] == "MISS"
    bypass = ask(proxy, headers={"cache-control": header})
    assert bypass.headers["x-cache"] == "BYPASS"
    assert fake_upstream.count(CHAT) == 2
    assert lookups(proxy, "bypass") == 1


def test_a_bypassed_answer_is_not_stored(proxy, fake_upstream):
    assert ask(proxy, headers={"cache-control": "no-store"}).headers["x-cache"] == "BYPASS"
    assert ask(proxy).headers["x-cache"] == "MISS"


def test_temperature_above_the_cap_is_neither_served_nor_stored(proxy_factory, fake_upstream):
    proxy = proxy_factory(cache_policy(fake_upstream.url, "{max_temperature: 0.5}"))
    assert ask(proxy, temperature=0.9).headers["x-cache"] == "BYPASS"
    assert ask(proxy, temperature=0.9).headers["x-cache"] == "BYPASS"
    assert ask(proxy).headers["x-cache"] == "BYPASS"  # none sent counts as 1.0
    assert ask(proxy, temperature=0.5).headers["x-cache"] == "MISS"
    assert ask(proxy, temperature=0.5).headers["x-cache"] == "HIT"
    assert fake_upstream.count(CHAT) == 4


def test_entries_expire_after_ttl_by_the_injected_clock(proxy_factory, fake_upstream):
    proxy = proxy_factory(cache_policy(fake_upstream.url, "{ttl_s: 60}"))
    now = [1_000_000.0]
    proxy.app[SERVICES].caches.clock = lambda: now[0]
    assert ask(proxy).headers["x-cache"] == "MISS"
    now[0] += 59
    assert ask(proxy).headers["x-cache"] == "HIT"
    now[0] += 2
    assert ask(proxy).headers["x-cache"] == "MISS"
    assert fake_upstream.count(CHAT) == 2


def test_an_upstream_error_is_not_stored(proxy, fake_upstream):
    fake_upstream.behaviour.fault, fake_upstream.behaviour.fault_times = "status_500", 1
    assert ask(proxy).status == 500
    assert ask(proxy).headers["x-cache"] == "MISS"
    assert stored(proxy) == 1


def test_a_cut_stream_is_not_stored(proxy, fake_upstream):
    fake_upstream.behaviour.fault, fake_upstream.behaviour.fault_times = "cut_stream", 1
    with pytest.raises(openai.APIError):
        for _ in oai(proxy).chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True):
            pass
    wait_for(lambda: proxy.metric("agent_proxy_requests_total", {"route": "openai", "upstream": "up-openai",
                                                                 "status_class": "2xx"}) == 1)  # fmt: skip
    assert ask(proxy).headers["x-cache"] == "MISS"
    assert fake_upstream.count(CHAT) == 2


def test_openai_streamed_hit_parsed_by_the_sdk_with_usage_when_asked(proxy, fake_upstream):
    client = oai(proxy)
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    wait_for(lambda: stored(proxy) == 1)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-cache"] == "HIT"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    without_usage = list(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True))
    assert all(c.usage is None for c in without_usage)
    assert [c.choices[0].finish_reason for c in without_usage if c.choices][-1] == "stop"
    assert fake_upstream.count(CHAT) == 1


def test_an_openai_stream_is_stored_and_served_whole_or_streamed(proxy, fake_upstream):
    client = oai(proxy)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
        if c.choices
    )
    wait_for(lambda: stored(proxy) == 1)
    plain = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    assert plain.headers["x-cache"] == "HIT"
    body = plain.parse()
    assert body.choices[0].message.content == streamed
    assert body.usage is not None and body.usage.completion_tokens > 0  # from the usage the proxy asked for
    assert fake_upstream.count(CHAT) == 1


def arguments(chunks) -> str:
    """The first tool call's arguments, joined from a stream's deltas."""
    return "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )


def test_an_openai_tool_call_stream_round_trips(proxy, fake_upstream):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "weather in Paris? use the tool"}]
    client = oai(proxy)
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools, stream=True)
    streamed = arguments(first)
    wait_for(lambda: stored(proxy) == 1)
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
    call = plain.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments == streamed
    again = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools, stream=True)
    assert arguments(again) == call.function.arguments
    assert fake_upstream.count(CHAT) == 1


def test_anthropic_stream_stored_then_served_streamed_and_whole(proxy, fake_upstream):
    client = claude(proxy)
    args = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": QUESTION}
    with client.messages.stream(**args) as stream:
        first = stream.get_final_message()
    wait_for(lambda: stored(proxy, "anthropic") == 1)
    with client.messages.with_streaming_response.create(**args, stream=True) as raw:
        assert raw.headers["x-cache"] == "HIT"
    with client.messages.stream(**args) as stream:
        again = stream.get_final_message()
    assert again.content[0].text == first.content[0].text
    assert again.usage.output_tokens == first.usage.output_tokens
    assert again.usage.input_tokens == first.usage.input_tokens
    assert again.id != first.id and again.id.startswith("msg_")
    whole = client.messages.create(**args)
    assert whole.content[0].text == first.content[0].text and whole.stop_reason == first.stop_reason
    assert fake_upstream.count("/v1/messages") == 1


def test_anthropic_tool_use_round_trips(proxy, fake_upstream):
    client = claude(proxy)
    tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object"}}]
    args = {"model": "claude-sonnet-4-5", "max_tokens": 100, "tools": tools,
            "messages": [{"role": "user", "content": "weather in Paris? use the tool"}]}  # fmt: skip
    first = client.messages.create(**args)
    assert first.content[-1].type == "tool_use"
    wait_for(lambda: stored(proxy, "anthropic") == 1)
    with client.messages.stream(**args) as stream:
        again = stream.get_final_message()
    assert again.content[-1].type == "tool_use" and again.content[-1].input == first.content[-1].input
    assert again.stop_reason == "tool_use"
    assert fake_upstream.count("/v1/messages") == 1


def test_a_hit_is_a_ledger_row_with_no_upstream_cost_and_counts_the_cost_saved(proxy_factory, fake_upstream, tmp_path):
    ledger = tmp_path / "ledger.sqlite3"
    proxy = proxy_factory(cache_policy(fake_upstream.url, extra=f"ledger: {{path: {ledger}, flush_interval_ms: 20}}\n"))
    session = {"x-session-id": "cache-ledger"}
    ask(proxy, headers=session)
    ask(proxy, headers=session)
    miss, hit = wait_rows(ledger, "cache-ledger", 2)
    assert (miss["cache_hit"], hit["cache_hit"]) == (0, 1)
    assert miss["cost_usd"] > 0 and hit["cost_usd"] == 0
    assert hit["output_tokens"] == miss["output_tokens"] and hit["upstream"] is None
    saved = proxy.metric("agent_proxy_cache_saved_usd_total", {"route": "openai", "caller": "default"})
    assert saved == pytest.approx(miss["cost_usd"])
    cost = proxy.metric("agent_proxy_cost_usd_total", {"caller": "default", "model": "gpt-4o-mini"})
    assert cost == pytest.approx(miss["cost_usd"])  # the hit added nothing to spend


def test_a_hit_still_counts_against_the_rate_limit(proxy_factory, fake_upstream):
    limits = "callers:\n  default: {rate_limit: {requests_per_minute: 2}}\n"
    proxy = proxy_factory(cache_policy(fake_upstream.url, extra=limits))
    assert ask(proxy).headers["x-cache"] == "MISS"
    hit = ask(proxy)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["x-ratelimit-remaining-requests"] == "0"  # a hit says what it used, as any answer does
    assert ask(proxy).status == 429
    assert fake_upstream.count(CHAT) == 1


def test_shadow_mode_stores_and_looks_up_but_never_answers(proxy_factory, fake_upstream):
    proxy = proxy_factory(cache_policy(fake_upstream.url, "{mode: shadow}"))
    first = ask(proxy)
    assert "x-cache" not in first.headers
    wait_for(lambda: stored(proxy) == 1)
    second = ask(proxy)
    assert "x-cache" not in second.headers
    assert fake_upstream.count(CHAT) == 2
    assert lookups(proxy, "hit") == 1


def test_routes_without_the_stage_are_untouched(proxy_factory, fake_upstream):
    proxy = proxy_factory(basic_policy(fake_upstream.url))
    assert "x-cache" not in ask(proxy).headers


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_the_answer_stored_is_the_redacted_one_the_caller_received(proxy_factory, fake_upstream, route):
    redaction = "  redaction: {output: [email], action: mask}\n"
    proxy = proxy_factory(basic_policy(fake_upstream.url, f"stages:\n  cache: {{}}\n{redaction}"))
    # The address comes last, so redaction holds it back and lets it go only at the end of the stream.
    reply = {"x-mock-reply-text": '"write to jane.doe@acmecorp.io"'}
    if route == "openai":
        client = oai(proxy)
        first = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="gpt-4o-mini", messages=QUESTION, stream=True, extra_headers=reply
            )
            if c.choices
        )
        wait_for(lambda: stored(proxy, route) == 1)
        again = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION).choices[0].message.content
    else:
        args = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": QUESTION}
        with claude(proxy).messages.stream(**args, extra_headers=reply) as stream:
            first = stream.get_final_message().content[0].text
        wait_for(lambda: stored(proxy, route) == 1)
        again = claude(proxy).messages.create(**args).content[0].text
    assert first == again == "write to [EMAIL]"


def test_a_policy_reload_keeps_the_entries(proxy_factory, fake_upstream, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(cache_policy(fake_upstream.url, "{ttl_s: 300}", "server: {reload_interval_s: 0.05}\n"))
    proxy = proxy_factory(path=path)
    assert ask(proxy).headers["x-cache"] == "MISS"
    path.write_text(cache_policy(fake_upstream.url, "{ttl_s: 600}", "server: {reload_interval_s: 0.05}\n"))
    wait_for(lambda: proxy.metric("agent_proxy_policy_reloads_total", {"result": "ok"}) == 1)
    assert ask(proxy).headers["x-cache"] == "HIT"
    assert fake_upstream.count(CHAT) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_over_max_entry_bytes_is_not_stored(proxy_factory, fake_upstream, stream):
    proxy = proxy_factory(cache_policy(fake_upstream.url, "{max_entry_bytes: 2048}"))
    long_answer = {"x-mock-reply-words": "400"}
    first = post(proxy, headers=long_answer, stream=stream)
    assert first.status == 200 and len(first.body) > 2048
    wait_for(lambda: proxy.metric("agent_proxy_requests_total", {"route": "openai", "upstream": "up-openai",
                                                                 "status_class": "2xx"}) == 1)  # fmt: skip
    assert post(proxy, headers=long_answer, stream=stream).headers["x-cache"] == "MISS"
    assert stored(proxy) == 0 and fake_upstream.count(CHAT) == 2

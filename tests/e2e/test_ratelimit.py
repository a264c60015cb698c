"""Rate limits, concurrency caps and budgets through the real SDKs, on the in-memory store."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import openai
import pytest

from proxy.app import SERVICES
from proxy.state import RateDelta
from tests.fixtures.http import post, send_post
from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"


def oai(proxy, retries: int = 0, key: str = DEMO_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=key, max_retries=retries)


def claude(proxy, retries: int = 0) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=retries)


def chat(client: openai.OpenAI, **kwargs):
    return client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, **kwargs)


def refusals(proxy, reason: str, caller: str = "demo", mode: str = "enforce") -> float:
    return proxy.metric("agent_proxy_limit_refusals_total", {"caller": caller, "reason": reason, "mode": mode})


def callers(rate_limit: str = "", budget: str = "") -> str:
    lines = ["callers:", "  default: {}", "  demo:"]
    if rate_limit:
        lines.append(f"    rate_limit: {rate_limit}")
    if budget:
        lines.append(f"    budget: {budget}")
    return "\n".join(lines) + "\n"


def test_over_the_limit_the_openai_sdk_raises_rate_limit_error_with_openais_headers(proxy_factory, fake_upstream):
    proxy = proxy_factory(basic_policy(fake_upstream.url, callers("{requests_per_minute: 3}")))
    client = oai(proxy)
    remaining = [chat(client).headers["x-ratelimit-remaining-requests"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as refused:
        chat(client)
    response = refused.value.response
    assert refused.value.code == "rate_limit_exceeded" and refused.value.type == "rate_limit_error"
    assert "3 requests per minute" in refused.value.message
    assert response.headers["x-ratelimit-limit-requests"] == "3"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    assert 19_000 < int(response.headers["retry-after-ms"]) <= 20_000  # one request back every 20 s
    assert response.headers["retry-after"] == "20"
    assert fake_upstream.count(CHAT) == 3  # refused before any upstream call
    assert refusals(proxy, "requests") == 1
    assert proxy.metric("agent_proxy_limit_admissions_total", {"caller": "demo", "how": "direct"}) == 3
    # Another caller has limits of its own.
    assert chat(oai(proxy, key=ADMIN_KEY)).status_code == 200


def test_the_sdks_own_retry_waits_as_retry_after_says(proxy_factory, fake_upstream):
    """One request back every 2 s; the SDK's own backoff (0.5 s, then 1 s) would be refused twice."""
    proxy = proxy_factory(basic_policy(fake_upstream.url, callers("{requests_per_minute: 30}")))
    quick = oai(proxy)
    for _ in range(30):
        chat(quick)
    patient = oai(proxy, retries=2)
    assert patient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices
    assert refusals(proxy, "requests") == 1  # one 429, then the retry after retry-after passed
    assert fake_upstream.count(CHAT) == 31


def test_anthropic_routes_carry_anthropics_headers_on_success_and_refusal(proxy_factory, fake_upstream):
    limits = "{requests_per_minute: 2, tokens_per_minute: 50000}"
    proxy = proxy_factory(basic_policy(fake_upstream.url, callers(limits)))
    client = claude(proxy)
    ok = client.messages.with_raw_response.create(model="claude-mock-1", max_tokens=100, messages=MESSAGES)
    assert ok.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert ok.headers["anthropic-ratelimit-requests-remaining"] == "1"
    assert ok.headers["anthropic-ratelimit-tokens-limit"] == "50000"
    sent = len(fake_upstream.last("/v1/messages").body)  # the prompt is bounded by the body's bytes
    assert int(ok.headers["anthropic-ratelimit-tokens-remaining"]) == 50000 - sent - 100  # + max_tokens
    reset = datetime.strptime(ok.headers["anthropic-ratelimit-requests-reset"], "%Y-%m-%dT%H:%M:%SZ")
    assert 0 < reset.replace(tzinfo=UTC).timestamp() - time.time() <= 31
    assert "x-ratelimit-limit-requests" not in ok.headers
    client.messages.create(model="claude-mock-1", max_tokens=100, messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model="claude-mock-1", max_tokens=100, messages=MESSAGES)
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    assert refused.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert int(refused.value.response.headers["retry-after"]) == 30


def test_tokens_are_admitted_on_the_estimate_and_corrected_by_the_real_usage(proxy_factory, fake_upstream):
    proxy = proxy_factory(basic_policy(fake_upstream.url, callers("{tokens_per_minute: 2500}")))
    store = proxy.app[SERVICES].state

    def tokens_left() -> float:
        return proxy.run(store.adjust([RateDelta("agent-proxy:c:demo:tpm", 2500, 60, 0)], time.time()))[0]

    client = oai(proxy)
    for _ in range(5):  # ~1080 tokens each on the estimate: without the correction the third would be refused
        response = chat(client, max_tokens=1000)
        assert 1300 < int(response.headers["x-ratelimit-remaining-tokens"]) <= 1500 - len(fake_upstream.last().body)
        wait_for(lambda: tokens_left() > 2400)  # the mock answered with a few dozen tokens
    # More than a minute's allowance at once can never pass: refused for good, and the SDK does not retry.
    with pytest.raises(openai.RateLimitError) as refused:
        chat(oai(proxy, retries=2), max_tokens=5000)
    assert "can never pass" in refused.value.message
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert fake_upstream.count(CHAT) == 5


def test_a_spent_budget_is_insufficient_quota_and_is_not_retried(proxy_factory, fake_upstream):
    extra = callers(budget="{usd_per_day: 5, usd_per_month: 100}")
    extra += "pricing:\n  dear-model: {input: 1000000, output: 1000000}\n"
    proxy = proxy_factory(basic_policy(fake_upstream.url, extra))
    client = oai(proxy, retries=2)
    client.chat.completions.create(model="dear-model", messages=MESSAGES)  # a dollar a token: well over $5
    gauge = {"caller": "demo", "period": "day"}
    wait_for(lambda: proxy.metric("agent_proxy_budget_remaining_usd", gauge) == 0)
    month = {"caller": "demo", "period": "month"}
    wait_for(lambda: 0 < proxy.metric("agent_proxy_budget_remaining_usd", month) < 100)  # corrected to the real cost
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="dear-model", messages=MESSAGES)
    assert refused.value.code == "insufficient_quota" and refused.value.type == "insufficient_quota"
    assert "$5.00 per day" in refused.value.message
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert fake_upstream.count(CHAT) == 1  # refused before the upstream, and never retried
    assert refusals(proxy, "budget_day") == 1

    with pytest.raises(anthropic.RateLimitError) as on_anthropic:
        claude(proxy).messages.create(model="dear-model", max_tokens=10, messages=MESSAGES)
    assert on_anthropic.value.body["error"]["type"] == "rate_limit_error"


def _slow_chat(proxy, delay_s: float):
    return chat(oai(proxy), extra_headers={"x-mock-delay-s": str(delay_s)})


def test_a_concurrency_slot_is_released_exactly_once_even_when_the_caller_leaves(proxy_factory, fake_upstream):
    proxy = proxy_factory(basic_policy(fake_upstream.url, callers("{concurrent: 1}")))
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:  # holds the slot, then goes away
        send_post(sock, CHAT, body, {"x-mock-delay-s": "5", "authorization": f"Bearer {DEMO_KEY}"})
        wait_for(lambda: fake_upstream.count(CHAT) == 1)
        with pytest.raises(openai.RateLimitError) as busy:
            chat(oai(proxy))
        assert "1 requests in flight" in busy.value.message
    headers = {"authorization": f"Bearer {DEMO_KEY}"}
    wait_for(lambda: post(proxy.url + CHAT, {"model": "m", "messages": MESSAGES}, headers).status == 200)

    # Released once, not twice: the cap still holds one request at a time.
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_slow_chat, proxy, 1.0)
        wait_for(lambda: fake_upstream.count(CHAT) >= 3)
        with pytest.raises(openai.RateLimitError):
            chat(oai(proxy))
        assert slow.result().status_code == 200
    assert refusals(proxy, "concurrent") == 2


def test_with_wait_ms_a_request_waits_for_a_slot_instead_of_being_refused(proxy_factory, fake_upstream):
    extra = callers("{concurrent: 1}") + "stages:\n  ratelimit: {wait_ms: 10000}\n"
    proxy = proxy_factory(basic_policy(fake_upstream.url, extra))
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_slow_chat, proxy, 0.5)
        wait_for(lambda: fake_upstream.count(CHAT) == 1)
        assert chat(oai(proxy)).status_code == 200  # waited until the first one finished
        assert slow.result().status_code == 200
    assert proxy.metric("agent_proxy_limit_admissions_total", {"caller": "demo", "how": "waited"}) == 1
    assert refusals(proxy, "concurrent") == 0


def test_limits_per_model_and_per_route(proxy_factory, fake_upstream):
    extra = (
        callers('{per_model: {"gpt-4o*": {requests_per_minute: 1}}}')
        + "stages:\n  ratelimit: {route_limit: {requests_per_minute: 3}}\n"
    )
    proxy = proxy_factory(basic_policy(fake_upstream.url, extra))
    client = oai(proxy)
    chat(client)
    with pytest.raises(openai.RateLimitError) as per_model:
        chat(client)
    assert "on models 'gpt-4o*'" in per_model.value.message
    client.chat.completions.create(model="o3-mini", messages=MESSAGES)  # another model: not this pattern
    chat(oai(proxy, key=ADMIN_KEY))  # another caller: the route's third request
    with pytest.raises(openai.RateLimitError) as per_route:
        chat(oai(proxy, key=ADMIN_KEY))
    assert "route 'openai'" in per_route.value.message
    claude(proxy).messages.create(model="claude-mock-1", max_tokens=10, messages=MESSAGES)  # another route
    assert refusals(proxy, "model_requests") == 1 and refusals(proxy, "route_requests", caller="default") == 1


def test_shadow_mode_counts_refusals_and_refuses_nothing(proxy_factory, fake_upstream):
    extra = callers("{requests_per_minute: 1}") + "stages:\n  ratelimit: {mode: shadow}\n"
    proxy = proxy_factory(basic_policy(fake_upstream.url, extra))
    client = oai(proxy)
    responses = [chat(client) for _ in range(3)]
    assert all(r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers for r in responses)
    assert refusals(proxy, "requests", mode="shadow") == 2
    decision = {"stage": "ratelimit", "decision": "refused:rate_limit_exceeded", "mode": "shadow"}
    wait_for(lambda: proxy.metric("agent_proxy_stage_decisions_total", decision) == 2)


def test_counts_survive_a_policy_reload(proxy_factory, fake_upstream, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(basic_policy(fake_upstream.url, callers("{requests_per_minute: 2}")))
    proxy = proxy_factory(path=path)
    client = oai(proxy)
    chat(client)
    chat(client)
    path.write_text(basic_policy(fake_upstream.url, callers("{requests_per_minute: 2, concurrent: 5}")))
    assert proxy.run(proxy.holder.reload("test"))
    with pytest.raises(openai.RateLimitError):
        chat(client)


def test_readyz_reports_the_state_backend(proxy_factory, fake_upstream):
    proxy = proxy_factory(basic_policy(fake_upstream.url))
    status, body = proxy.get("/readyz")
    assert status == 200 and b'"state": {"backend": "memory", "reachable": true}' in body


def test_the_example_policy_serves_offline_with_its_limits(proxy_factory):
    example = Path(__file__).resolve().parents[2] / "policies" / "examples" / "limits.yaml"
    proxy = proxy_factory(path=example)
    response = chat(oai(proxy))
    assert response.headers["x-ratelimit-limit-requests"] == "120"  # the caller's, tighter than the route's
    assert response.headers["x-ratelimit-remaining-requests"] == "119"
    assert [s for r in proxy.holder.current.routes for s in r.chain.names if s in ("ratelimit", "runs")] == [
        "ratelimit",
        "runs",
        "ratelimit",
        "runs",
    ]

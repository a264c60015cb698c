"""Health, readiness, metrics, the admin endpoint, and shadow mode."""

from __future__ import annotations

import openai
import orjson
import pytest

from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def proxy(proxy_factory, fake_upstream):
    return proxy_factory(basic_policy(fake_upstream.url))


def test_health_and_readiness_need_no_key(proxy):
    assert proxy.get("/healthz")[0] == 200
    status, body = proxy.get("/readyz")
    assert status == 200 and orjson.loads(body)["status"] == "ready"


def test_metrics_count_requests_by_route_and_never_hold_caller_input(proxy):
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    client.chat.completions.create(model="secret-model-name-xyz", messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=proxy.openai_base_url, api_key="sk-caller-wrong-key", max_retries=0).models.list()
    wait_for(
        lambda: (
            proxy.metric("agent_proxy_requests_total", {"route": "openai", "upstream": "none", "status_class": "4xx"})
            == 1
        )
    )
    status, body = proxy.get("/metrics")
    text = body.decode()
    assert status == 200
    assert 'agent_proxy_requests_total{route="openai",status_class="2xx",upstream="up-openai"} 1.0' in text
    assert 'agent_proxy_stage_decisions_total{decision="refused:unknown_key",mode="enforce",stage="auth"} 1.0' in text
    assert "agent_proxy_time_to_first_byte_seconds_bucket" in text
    for leaked in ("secret-model-name-xyz", "sk-caller-wrong-key", DEMO_KEY, "upstream-secret"):
        assert leaked not in text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert all(name.startswith("agent_proxy_") for name in names if not name.startswith(("python_", "process_")))


def test_admin_status_needs_the_admin_scope(proxy):
    assert proxy.get("/admin/status")[0] == 401
    status, body = proxy.get("/admin/status", {"authorization": f"Bearer {DEMO_KEY}"})
    assert status == 403 and orjson.loads(body)["error"]["code"] == "admin_scope_required"
    status, body = proxy.get("/admin/status", {"authorization": f"Bearer {ADMIN_KEY}"})
    routes = orjson.loads(body)["routes"]
    assert status == 200 and [r["route"] for r in routes] == ["anthropic", "openai"]
    assert b"upstream-secret" not in body


def test_shadow_auth_records_without_refusing(proxy_factory, fake_upstream):
    proxy = proxy_factory(basic_policy(fake_upstream.url).replace("auth:\n", "auth:\n  mode: shadow\n"))
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key="not-a-real-key", max_retries=0)
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
    labels = {"stage": "auth", "decision": "refused:unknown_key", "mode": "shadow"}
    wait_for(lambda: proxy.metric("agent_proxy_stage_decisions_total", labels) == 1)
    assert fake_upstream.last().headers["authorization"] == "Bearer upstream-secret"

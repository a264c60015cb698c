"""Host and Origin on LLM routes: a rebinding name or a cross-site page gets 403 in the route's shape.

The MCP route's JSON-RPC 403 is in tests/e2e/test_mcp_conformance.py (with the conformance suite's own
rebinding scenario).
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy

MESSAGES = [{"role": "user", "content": "hi"}]
REBINDING = {"Host": "evil.example.com:8080", "Origin": "http://evil.example.com:8080"}
CROSS_SITE = {"Origin": "https://evil.example.com"}


@pytest.fixture
def proxy(proxy_factory, fake_upstream):
    return proxy_factory(basic_policy(fake_upstream.url))


def openai_client(proxy, headers=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0, default_headers=headers)


def claude_client(proxy, headers=None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0, default_headers=headers)


def ask_openai(client: openai.OpenAI) -> str | None:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content


def ask_claude(client: anthropic.Anthropic) -> str:
    return client.messages.create(model="claude-mock-1", max_tokens=5, messages=MESSAGES).content[0].text


@pytest.mark.parametrize(("headers", "header"), [(REBINDING, "host"), (CROSS_SITE, "origin")])
def test_openai_route_refuses_in_openai_shape(proxy, fake_upstream, headers, header):
    with pytest.raises(openai.PermissionDeniedError) as err:
        ask_openai(openai_client(proxy, headers))
    assert err.value.status_code == 403 and err.value.code == f"{header}_not_allowed"
    assert fake_upstream.requests == []  # refused before anything was forwarded
    assert proxy.metric("agent_proxy_host_refusals_total", {"route": "openai", "header": header}) == 1


@pytest.mark.parametrize(("headers", "header"), [(REBINDING, "host"), (CROSS_SITE, "origin")])
def test_anthropic_route_refuses_in_anthropic_shape(proxy, fake_upstream, headers, header):
    with pytest.raises(anthropic.PermissionDeniedError) as err:
        ask_claude(claude_client(proxy, headers))
    assert err.value.status_code == 403
    assert err.value.body["error"]["type"] == "permission_error"
    assert header.title() in err.value.body["error"]["message"]
    assert fake_upstream.requests == []
    assert proxy.metric("agent_proxy_host_refusals_total", {"route": "anthropic", "header": header}) == 1


def test_sdks_on_loopback_names_and_a_local_page_pass(proxy):
    assert ask_openai(openai_client(proxy))  # Host 127.0.0.1:port, no Origin: an SDK
    assert ask_openai(openai_client(proxy, {"Host": "localhost"}))
    assert ask_openai(openai_client(proxy, {"Host": "[::1]:8080", "Origin": "http://localhost:5173"}))
    assert ask_claude(claude_client(proxy, {"Host": "localhost:8080", "Origin": "http://127.0.0.1:3000"}))
    assert proxy.metric("agent_proxy_host_refusals_total", {"route": "openai", "header": "host"}) == 0


def test_allowed_hosts_let_a_service_name_through(proxy_factory, fake_upstream):
    extra = "server: {allowed_hosts: [agent-proxy, '*.svc.cluster.local'], allowed_origins: ['https://ui.example.com']}"
    proxy = proxy_factory(basic_policy(fake_upstream.url, extra))
    assert ask_openai(openai_client(proxy, {"Host": "agent-proxy:8080"}))
    assert ask_openai(openai_client(proxy, {"Host": "agent-proxy.team.svc.cluster.local"}))
    assert ask_openai(openai_client(proxy, {"Host": "agent-proxy", "Origin": "https://ui.example.com"}))
    with pytest.raises(openai.PermissionDeniedError):
        ask_openai(openai_client(proxy, {"Host": "evil.example.com"}))


def test_a_route_overrides_the_server_lists(proxy_factory, fake_upstream):
    text = basic_policy(fake_upstream.url).replace(
        "{name: openai, prefix: /v1/, upstream: up-openai}",
        "{name: openai, prefix: /v1/, upstream: up-openai, allowed_origins: ['https://chat.example.com']}",
    )
    proxy = proxy_factory(text)
    assert ask_openai(openai_client(proxy, {"Origin": "https://chat.example.com"}))
    with pytest.raises(anthropic.PermissionDeniedError):
        ask_claude(claude_client(proxy, {"Origin": "https://chat.example.com"}))


def test_admin_endpoints_refuse_a_rebinding_host_before_asking_for_the_key(proxy):
    status, body = proxy.get("/admin/status", {"Host": "evil.example.com", "Authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 403 and b"host_not_allowed" in body
    assert proxy.metric("agent_proxy_host_refusals_total", {"route": "admin", "header": "host"}) == 1
    status, _ = proxy.get("/admin/status", {"Host": "localhost:8080", "Authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 200

"""Every error the proxy produces is in the route protocol's shape, so SDKs raise their usual exceptions."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.fixtures.http import post, request
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.servers import free_port

MESSAGES = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": f"Bearer {DEMO_KEY}"}


def openai_error(response) -> dict:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "code"}, body
    return body["error"]


def anthropic_error(response) -> dict:
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}, body
    return body["error"]


@pytest.fixture
def proxy(proxy_factory, fake_upstream):
    return proxy_factory(basic_policy(fake_upstream.url, "server: {max_body_bytes: 2048}"))


def test_missing_and_wrong_keys_raise_authentication_errors(proxy):
    with pytest.raises(openai.AuthenticationError) as err:
        openai.OpenAI(base_url=proxy.openai_base_url, api_key="wrong", max_retries=0).models.list()
    assert err.value.code == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=proxy.url, api_key="wrong", max_retries=0).messages.create(
            model="claude-mock-1", max_tokens=5, messages=MESSAGES
        )
    response = post(proxy.openai_base_url + "/chat/completions", {"model": "m", "messages": MESSAGES})
    assert response.status == 401 and openai_error(response)["code"] == "missing_api_key"


def test_malformed_json_is_a_400_in_each_shape(proxy):
    headers = {**AUTH, "content-type": "application/json"}
    response = post(proxy.openai_base_url + "/chat/completions", b'{"model": "m", ', headers)
    assert response.status == 400 and openai_error(response)["code"] == "invalid_json"
    response = post(proxy.url + "/v1/messages", b"[1, 2", {"x-api-key": DEMO_KEY, "content-type": "application/json"})
    assert response.status == 400 and anthropic_error(response)["type"] == "invalid_request_error"
    response = post(proxy.openai_base_url + "/chat/completions", b"[1, 2]", headers)
    assert response.status == 400 and "JSON object" in openai_error(response)["message"]


def test_wrong_content_type_is_415(proxy):
    response = post(proxy.openai_base_url + "/chat/completions", b"model=m", {**AUTH, "content-type": "text/plain"})
    assert response.status == 415 and openai_error(response)


def test_oversize_body_is_413_whether_declared_or_chunked(proxy, fake_upstream):
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
    response = post(proxy.openai_base_url + "/chat/completions", big, AUTH)
    assert response.status == 413 and openai_error(response)["code"] == "request_too_large"

    def chunked():
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    response = post(
        proxy.url + "/v1/messages",
        chunked(),
        {"x-api-key": DEMO_KEY, "content-type": "application/json", "transfer-encoding": "chunked"},
    )
    assert response.status == 413 and anthropic_error(response)["type"] == "request_too_large"
    assert fake_upstream.requests == []
    with pytest.raises(openai.APIStatusError) as err:
        openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0).chat.completions.create(
            model="m", messages=big["messages"]
        )
    assert err.value.status_code == 413


def test_unknown_route_is_404_in_the_callers_shape(proxy_factory, fake_upstream):
    policy = basic_policy(fake_upstream.url).replace("prefix: /v1/, upstream", "path: /v1/chat/completions, upstream")
    proxy = proxy_factory(policy)
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0).embeddings.create(
            model="e", input="x"
        )
    response = request("GET", proxy.url + "/nowhere", headers={"anthropic-version": "2023-06-01"})
    assert response.status == 404 and anthropic_error(response)["type"] == "not_found_error"


def test_dot_segments_are_refused(proxy):
    response = request("GET", proxy.url + "/v1/../admin/status", headers=AUTH)
    assert response.status in (400, 404)  # aiohttp may normalise the path before routing
    assert response.status != 200


def test_unreachable_upstream_is_502(proxy_factory):
    proxy = proxy_factory(basic_policy(f"http://127.0.0.1:{free_port()}"))
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert err.value.status_code == 502
    assert "upstream-secret" not in str(err.value.body)


def test_upstream_timeout_is_504(proxy_factory, fake_upstream):
    policy = basic_policy(fake_upstream.url).replace("first_byte_s: 5", "first_byte_s: 0.3")
    proxy = proxy_factory(policy)
    fake_upstream.behaviour.fault = "hang"
    with pytest.raises(openai.APIStatusError) as err:
        openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0).chat.completions.create(
            model="m", messages=MESSAGES
        )
    assert err.value.status_code == 504
    with pytest.raises(anthropic.APIStatusError) as aerr:
        anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0).messages.create(
            model="claude-mock-1", max_tokens=5, messages=MESSAGES
        )
    assert aerr.value.status_code == 504 and aerr.value.body["error"]["type"] == "timeout_error"


def test_upstream_errors_pass_through_unchanged(proxy, fake_upstream):
    fake_upstream.behaviour.fault = "status_429"
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0).chat.completions.create(
            model="m", messages=MESSAGES
        )

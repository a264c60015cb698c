"""The anthropic SDK works through the proxy, streaming included."""

from __future__ import annotations

import anthropic
import pytest

from tests.fixtures.proxy_server import DEMO_KEY, basic_policy

MESSAGES = [{"role": "user", "content": "Explain rainbows"}]


@pytest.fixture
def client(proxy_factory, fake_upstream) -> anthropic.Anthropic:
    proxy = proxy_factory(basic_policy(fake_upstream.url))
    return anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0)


def test_message_stream_and_not(client):
    whole = client.messages.create(model="claude-mock-1", max_tokens=100, system="Be brief.", messages=MESSAGES)
    with client.messages.stream(model="claude-mock-1", max_tokens=100, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == whole.content[0].text
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_count_tokens(client):
    counted = client.messages.count_tokens(model="claude-mock-1", messages=MESSAGES)
    assert counted.input_tokens > 0


def test_provider_key_is_injected(client, fake_upstream):
    client.messages.create(model="claude-mock-1", max_tokens=10, messages=MESSAGES)
    seen = fake_upstream.last("/v1/messages").headers
    assert seen["x-api-key"] == "upstream-secret"
    assert DEMO_KEY not in str(seen)
    assert seen["anthropic-version"]  # the SDK's own headers pass through

"""The openai SDK, unchanged but for its base URL and key, works through the proxy."""

from __future__ import annotations

import asyncio
import re

import openai
import pytest
from aiohttp import web

from tests.fixtures.http import post
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.servers import ServerThread

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about tides"}]


def _without_ids(stream: bytes) -> bytes:
    """Response ids count requests at the fake upstream, and `created` is its clock's second: the rest is identical."""
    return re.sub(rb'"created":\d+', b'"created":0', re.sub(rb'"id":"[^"]*"', b'"id":""', stream))


@pytest.fixture
def proxy(proxy_factory, fake_upstream):
    return proxy_factory(basic_policy(fake_upstream.url))


@pytest.fixture
def client(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)


@pytest.fixture
def direct(fake_upstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake_upstream.openai_url, api_key="direct", max_retries=0)


def test_chat_completion_matches_the_upstream(client, direct):
    via_proxy = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    upstream = direct.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert via_proxy.choices[0].message.content == upstream.choices[0].message.content
    assert via_proxy.usage == upstream.usage


def test_streamed_chat_reassembles_to_the_non_streamed_answer(client):
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streamed_chat_is_byte_identical_to_the_upstream(proxy, fake_upstream):
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    via_proxy = post(proxy.openai_base_url + "/chat/completions", body, {"authorization": f"Bearer {DEMO_KEY}"})
    upstream = post(fake_upstream.openai_url + "/chat/completions", body)
    assert via_proxy.headers["content-type"].startswith("text/event-stream")
    assert via_proxy.body.count(b"\n\n") == upstream.body.count(b"\n\n") > 3
    assert _without_ids(via_proxy.body) == _without_ids(upstream.body)


def test_async_client_streams(proxy):
    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
        async with client:
            stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(run()).strip()


def test_responses_api_stream_and_not(client):
    whole = client.responses.create(model="gpt-4o-mini", input="Summarise the news")
    with client.responses.stream(model="gpt-4o-mini", input="Summarise the news") as stream:
        final = stream.get_final_response()
    assert final.output_text == whole.output_text
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_completions_embeddings_and_models(client):
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert completion.choices[0].text
    embedding = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) > 0
    assert "gpt-4o" in {m.id for m in client.models.list()}


def test_provider_key_is_injected_and_caller_key_never_forwarded(client, fake_upstream):
    response = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-request-id": "req-abc.123"}
    )
    seen = fake_upstream.last("/v1/chat/completions").headers
    assert seen["authorization"] == "Bearer upstream-secret"
    assert DEMO_KEY not in str(seen)
    assert seen["x-request-id"] == "req-abc.123"
    assert response.headers["x-request-id"] == "req-abc.123"
    assert response.headers["x-agent-proxy-upstream"] == "up-openai"


def test_hop_by_hop_headers_are_not_forwarded(proxy, fake_upstream):
    post(
        proxy.openai_base_url + "/chat/completions",
        {"model": "m", "messages": MESSAGES},
        {
            "authorization": f"Bearer {DEMO_KEY}",
            "connection": "keep-alive, x-private-hop",
            "x-private-hop": "secret-hop",
            "te": "trailers",
            "proxy-authorization": "Basic Zm9vOmJhcg==",
            "x-end-to-end": "kept",
        },
    )
    seen = fake_upstream.last("/v1/chat/completions").headers
    assert "x-private-hop" not in seen and "proxy-authorization" not in seen and "te" not in seen
    assert seen["x-end-to-end"] == "kept"


def test_percent_encoded_paths_keep_their_meaning_upstream(proxy, fake_upstream):
    from tests.fixtures.http import request

    response = request(
        "GET", proxy.openai_base_url + "/models/ft%3Amodel%3Fx=1%2Fy", headers={"authorization": f"Bearer {DEMO_KEY}"}
    )
    assert response.status == 404  # the mock knows no such model; what matters is what it was asked
    seen = fake_upstream.last()
    assert seen.path == "/v1/models/ft:model?x=1/y" and seen.query == {}


ACCEPTED = web.AppKey("accepted", list)


async def _gzip_app() -> web.Application:
    """An upstream that compresses its answers whenever the request accepts gzip, as CDNs in front of APIs do."""

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        request.app[ACCEPTED].append(request.headers.get("accept-encoding", ""))
        completion = {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "tide " * 200}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 200, "total_tokens": 209},
        }
        response = web.json_response(completion)
        response.enable_compression(web.ContentCoding.gzip)
        return response

    app = web.Application()
    app[ACCEPTED] = []
    app.router.add_post("/v1/chat/completions", chat)
    return app


def test_a_compressed_upstream_answer_reaches_the_sdk_decoded(proxy_factory):
    with ServerThread(_gzip_app, name="gzip") as upstream:
        proxy = proxy_factory(basic_policy(upstream.url))
        raw = post(
            proxy.openai_base_url + "/chat/completions",
            {"model": "gpt-4o-mini", "messages": MESSAGES},
            {"authorization": f"Bearer {DEMO_KEY}", "accept-encoding": "identity"},
        )
        assert "content-encoding" not in raw.headers and raw.body.startswith(b"{")
        client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert completion.choices[0].message.content == "tide " * 200 and completion.usage.completion_tokens == 200
        assert all("gzip" in accepted for accepted in upstream.app[ACCEPTED])  # so the upstream did compress

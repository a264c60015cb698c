"""The `upstream` embedder against the built-in mock on a real socket, through the proxy's transport.

Failures (an error status, a slow or unreachable upstream, no transport) are misses, never errors.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from proxy.cache.semantic import SemanticIndex
from proxy.cache.semantic_config import SemanticConfig
from proxy.embed.upstream import UpstreamEmbedder
from proxy.forward.transport import Transport
from proxy.policy.compile import compile_policy
from proxy.policy.context import BuildContext
from proxy.policy.load import policy_from_text
from proxy.services import Services
from tests.fixtures.fake_upstream import FakeUpstream

POLICY = """\
version: 1
upstreams:
  emb: {{url: "{url}", protocol: openai, credentials: {{header: Authorization, value: "Bearer sk-embed"}}}}
  slow: {{url: "{url}", protocol: openai, headers: {{x-mock-delay-s: "5"}}}}
  closed: {{url: "http://127.0.0.1:{closed}", protocol: openai}}
  tool: {{url: "{url}", protocol: http}}
  echo: {{url: "{url}/tools/echo", protocol: openai}}
routes:
  - {{name: chat, prefix: /v1/, upstream: emb, auth: none}}
"""


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def setup(fake_upstream: FakeUpstream):
    transport = Transport()
    services = Services(transport=transport)
    policy = policy_from_text(POLICY.format(url=fake_upstream.url, closed=closed_port()), env={})
    compiled = compile_policy(policy, services=services)
    yield BuildContext(policy, services, compiled.upstreams), fake_upstream
    await transport.close()


def build(ctx: BuildContext, **settings) -> SemanticIndex:
    index = SemanticIndex.build(SemanticConfig(enabled=True, **settings), ctx)
    assert index is not None
    return index


async def test_embeds_through_the_upstream_with_its_credentials(setup):
    ctx, upstream = setup
    index = build(ctx, embedder="emb", model="text-embedding-3-small", threshold=0.8)
    await index.add("p", "What is the capital of France?", "k1")
    sent = upstream.last("/v1/embeddings")
    assert sent.json() == {"model": "text-embedding-3-small", "input": "What is the capital of France?",
                           "encoding_format": "float"}  # fmt: skip
    assert sent.headers["authorization"] == "Bearer sk-embed"

    # The mock's vectors are a hashed bag of words: the same words in another case and order are the same vector.
    assert await index.find("p", "what is the capital of france") == ("k1", pytest.approx(1.0, abs=1e-5))
    assert await index.find("p", "Is the capital of France Paris?") is None  # a new fact: the guard vetoes
    assert await index.find("q", "What is the capital of France?") is None


async def test_mock_embeddings_are_deterministic_and_overlap_by_words(setup):
    ctx, _ = setup
    embedder = UpstreamEmbedder(ctx.upstreams["emb"], "m", 2.0, lambda: ctx.services.transport)
    first, again = await embedder.embed("how do I bake bread"), await embedder.embed("how do I bake bread")
    near, far = await embedder.embed("how do I bake sourdough bread"), await embedder.embed("stock prices today")
    assert first is not None and again is not None and near is not None and far is not None
    assert np.array_equal(first, again)
    assert float(first @ near) > float(first @ far)


async def test_an_error_status_is_a_miss(setup):
    ctx, upstream = setup
    index = build(ctx, embedder="emb")
    upstream.behaviour.fault = "status_500"
    await index.add("p", "What is a mutex?", "k")
    assert len(index.index) == 0
    assert await index.find("p", "What is a mutex?") is None


async def test_a_slow_upstream_is_a_miss_within_the_timeout(setup):
    ctx, _ = setup
    embedder = UpstreamEmbedder(ctx.upstreams["slow"], "m", 0.3, lambda: ctx.services.transport)
    started = time.monotonic()
    assert await embedder.embed("What is a mutex?") is None
    assert time.monotonic() - started < 2.0


async def test_an_unreachable_upstream_or_no_transport_is_a_miss(setup):
    ctx, _ = setup
    assert await UpstreamEmbedder(ctx.upstreams["closed"], "m", 1.0, lambda: ctx.services.transport).embed("x") is None
    assert await UpstreamEmbedder(ctx.upstreams["emb"], "m", 1.0, lambda: None).embed("x") is None


async def test_an_answer_without_an_embedding_is_a_miss(setup):
    ctx, upstream = setup
    echo = UpstreamEmbedder(ctx.upstreams["echo"], "m", 1.0, lambda: ctx.services.transport)  # JSON, not embeddings
    assert await echo.embed("What is a mutex?") is None
    assert upstream.last().path == "/tools/echo/v1/embeddings"


def test_an_embedder_upstream_must_speak_openai(setup):
    ctx, _ = setup
    with pytest.raises(ValueError, match="protocol openai"):
        SemanticIndex.build(SemanticConfig(enabled=True, embedder="tool"), ctx)

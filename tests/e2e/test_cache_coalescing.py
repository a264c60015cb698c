"""Concurrent identical misses reach the upstream once; when that one fails, the others go themselves."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.fixtures.proxy_server import DEMO_KEY, basic_policy

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "the same question, fifty times"}]}


@pytest.fixture
def proxy(proxy_factory, fake_upstream):
    return proxy_factory(basic_policy(fake_upstream.url, "stages:\n  cache: {}\n"))


async def burst(url: str, count: int, body: dict = BODY) -> list[tuple[int, str | None, dict]]:
    # The upstream holds its answer a while, so every request of the burst arrives while the first is upstream.
    headers = {"authorization": f"Bearer {DEMO_KEY}", "x-mock-delay-s": "1"}
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, str | None, dict]:
            async with session.post(url + CHAT, json=body, headers=headers) as response:
                return response.status, response.headers.get("x-cache"), await response.json()

        return await asyncio.gather(*(one() for _ in range(count)))


def test_fifty_concurrent_identical_misses_reach_the_upstream_once(proxy, fake_upstream):
    results = asyncio.run(burst(proxy.url, 50))
    assert fake_upstream.count(CHAT) == 1
    assert all(status == 200 for status, _, _ in results)
    assert sorted(cache for _, cache, _ in results).count("MISS") == 1
    texts = {body["choices"][0]["message"]["content"] for _, _, body in results}
    ids = {body["id"] for _, _, body in results}
    assert len(texts) == 1 and len(ids) == 50  # one answer, each with its own id


def test_when_the_first_fails_the_waiters_go_upstream_themselves(proxy, fake_upstream):
    fake_upstream.behaviour.fault, fake_upstream.behaviour.fault_times = "status_500", 1
    results = asyncio.run(burst(proxy.url, 5))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 200, 200, 500]
    assert fake_upstream.count(CHAT) == 5


def test_different_requests_are_not_coalesced(proxy, fake_upstream):
    async def two() -> None:
        other = {**BODY, "messages": [{"role": "user", "content": "another question"}]}
        await asyncio.gather(burst(proxy.url, 1), burst(proxy.url, 1, other))

    asyncio.run(two())
    assert fake_upstream.count(CHAT) == 2

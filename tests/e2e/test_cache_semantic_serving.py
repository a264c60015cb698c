"""How the cache stage serves what the semantic index finds: the index itself is tested on its own.

A stand-in index (same question up to case and spaces, within one partition) is put behind the
`SemanticIndex` interface, so these tests check the stage's side: the partition it computes, the
entry it serves, the headers, and that a stale key is discarded.
"""

from __future__ import annotations

import pytest

from proxy.cache.semantic import SemanticIndex
from tests.fixtures.http import request
from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

CHAT = "/v1/chat/completions"


class StandIn(SemanticIndex):
    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], str] = {}
        self.discarded: list[str] = []

    async def find(self, partition: str, text: str) -> tuple[str, float] | None:
        key = self.keys.get((partition, " ".join(text.lower().split())))
        return None if key is None else (key, 0.97)

    async def add(self, partition: str, text: str, key: str) -> bool:
        self.keys[(partition, " ".join(text.lower().split()))] = key
        return True

    def discard(self, key: str) -> None:
        self.discarded.append(key)
        self.keys = {k: v for k, v in self.keys.items() if v != key}


@pytest.fixture
def index(monkeypatch) -> StandIn:
    made = StandIn()
    monkeypatch.setattr(SemanticIndex, "build", classmethod(lambda cls, config, ctx: made))
    return made


@pytest.fixture
def proxy(proxy_factory, fake_upstream, index):
    return proxy_factory(basic_policy(fake_upstream.url, "stages:\n  cache: {}\n"))


def ask(proxy, text: str, system: str | None = None, key: str = DEMO_KEY):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    before = proxy.metric("agent_proxy_cache_stored_total", {"route": "openai"})
    body = {"model": "gpt-4o-mini", "messages": messages}
    response = request("POST", proxy.url + CHAT, body, {"authorization": f"Bearer {key}"})
    if response.headers.get("x-cache") == "MISS":
        wait_for(lambda: proxy.metric("agent_proxy_cache_stored_total", {"route": "openai"}) > before)
    return response


def test_a_near_identical_question_is_a_semantic_hit_with_its_similarity(proxy, fake_upstream):
    first = ask(proxy, "What is the capital of France?")
    hit = ask(proxy, "what is the   capital of france?")
    assert hit.headers["x-cache"] == "HIT" and hit.headers["x-cache-similarity"] == "0.9700"
    assert hit.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    assert proxy.metric("agent_proxy_cache_lookups_total", {"route": "openai", "result": "semantic_hit"}) == 1
    assert fake_upstream.count(CHAT) == 1


def test_another_system_prompt_or_caller_is_another_partition(proxy, fake_upstream):
    ask(proxy, "What is the capital of France?")
    assert ask(proxy, "what is the capital of france?", system="answer in French").headers["x-cache"] == "MISS"
    assert ask(proxy, "what is the capital of france?", key=ADMIN_KEY).headers["x-cache"] == "MISS"
    assert fake_upstream.count(CHAT) == 3


def test_a_key_whose_entry_is_gone_is_discarded_and_missed(proxy, fake_upstream, index):
    ask(proxy, "What is the capital of France?")
    partition, text = next(iter(index.keys))
    index.keys[(partition, text)] = "0" * 64  # an entry that expired or was evicted
    assert ask(proxy, "what is the capital of france?").headers["x-cache"] == "MISS"
    assert index.discarded == ["0" * 64]

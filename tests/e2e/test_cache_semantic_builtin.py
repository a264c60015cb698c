"""The semantic cache end to end with the built-in embedder: loaded while the policy loads, so the first
paraphrase after start is already a hit; a near-miss is not."""

from __future__ import annotations

import pytest

from tests.fixtures.http import request
from tests.fixtures.proxy_server import DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

pytest.importorskip("onnxruntime", reason="the semantic extra is not installed")

CHAT = "/v1/chat/completions"


def ask(proxy, text: str):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    return request("POST", proxy.url + CHAT, body, headers={"authorization": f"Bearer {DEMO_KEY}"})


def indexed(proxy) -> float:
    return proxy.metric("agent_proxy_cache_semantic_indexed_total", {"route": "openai"}) or 0.0


def test_the_first_paraphrase_after_start_is_a_hit_and_a_near_miss_is_not(proxy_factory, fake_upstream):
    proxy = proxy_factory(basic_policy(fake_upstream.url, "stages:\n  cache: {semantic: {enabled: true}}\n"))
    first = ask(proxy, "How do I reverse a list in Python?")
    assert first.status == 200 and first.headers["x-cache"] == "MISS"
    wait_for(lambda: indexed(proxy) == 1)  # stored, and its question embedded
    again = ask(proxy, "how to reverse a python list")
    assert again.headers["x-cache"] == "HIT", again.headers
    assert 0.85 <= float(again.headers["x-cache-similarity"]) < 1.0
    assert ask(proxy, "How do I not reverse a list in Python?").headers["x-cache"] == "MISS"  # a negation: never served
    assert fake_upstream.count(CHAT) == 2
    wait_for(lambda: indexed(proxy) == 2)  # the near-miss stored and indexed in its own right


def semantic_policy(fake_upstream, semantic: str) -> str:
    extra = f"server: {{reload_interval_s: 3600}}\nstages:\n  cache: {{semantic: {{enabled: true{semantic}}}}}\n"
    return basic_policy(fake_upstream.url, extra)


def reload(proxy, path, text: str) -> None:
    """Rewrite the file and reload it as SIGHUP does, awaiting the result."""
    path.write_text(text)
    assert proxy.run(proxy.holder.reload("test"))


def test_the_index_survives_a_reload_unless_its_embedder_or_bound_changes(proxy_factory, fake_upstream, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(semantic_policy(fake_upstream, ""))
    proxy = proxy_factory(path=path)
    assert ask(proxy, "How do I reverse a list in Python?").headers["x-cache"] == "MISS"
    wait_for(lambda: indexed(proxy) == 1)

    reload(proxy, path, semantic_policy(fake_upstream, ", threshold: 0.84"))  # a lookup setting: the index stays
    again = ask(proxy, "how to reverse a python list")
    assert again.headers["x-cache"] == "HIT" and "x-cache-similarity" in again.headers, again.headers
    assert fake_upstream.count(CHAT) == 1

    reload(proxy, path, semantic_policy(fake_upstream, ", threshold: 0.84, max_entries: 1000"))  # a new bound
    assert ask(proxy, "how do you reverse a list in python").headers["x-cache"] == "MISS"  # a fresh, empty index
    assert fake_upstream.count(CHAT) == 2

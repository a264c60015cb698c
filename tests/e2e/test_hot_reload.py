"""Editing the policy file while requests are in flight: valid edits swap atomically, invalid ones never land."""

from __future__ import annotations

import hashlib
import threading

import openai
import orjson
import pytest

from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, DEMO_KEY_SHA256, basic_policy
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "hi"}]
NEW_KEY = "rotated-key-2"


def client(proxy, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=key, max_retries=0)


def test_reload_on_file_change_keeps_in_flight_requests_on_their_policy(proxy_factory, fake_upstream, tmp_path):
    path = tmp_path / "policy.yaml"
    original = basic_policy(fake_upstream.url, "server: {reload_interval_s: 0.05}")
    path.write_text(original)
    proxy = proxy_factory(path=path)
    reloads_ok = {"result": "ok"}

    # A request that is still waiting for the upstream when the policy changes.
    fake_upstream.behaviour.fault, fake_upstream.behaviour.fault_times = "slow_first_byte", 1
    fake_upstream.behaviour.delay_s = 1.0
    in_flight: dict[str, object] = {}

    def slow_request() -> None:
        try:
            in_flight["answer"] = client(proxy, DEMO_KEY).chat.completions.create(model="m", messages=MESSAGES)
        except Exception as exc:  # reported below
            in_flight["error"] = exc

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_for(lambda: fake_upstream.count("/v1/chat/completions") == 1)

    new_hash = hashlib.sha256(NEW_KEY.encode()).hexdigest()
    path.write_text(original.replace(DEMO_KEY_SHA256, new_hash))
    wait_for(lambda: proxy.metric("agent_proxy_policy_reloads_total", reloads_ok) == 1)

    assert client(proxy, NEW_KEY).chat.completions.create(model="m", messages=MESSAGES).choices
    with pytest.raises(openai.AuthenticationError):
        client(proxy, DEMO_KEY).chat.completions.create(model="m", messages=MESSAGES)

    thread.join(10)
    assert "error" not in in_flight, in_flight.get("error")
    assert in_flight["answer"].choices[0].message.content

    # An invalid edit is rejected; the previous policy keeps serving.
    path.write_text(original.replace(DEMO_KEY_SHA256, new_hash).replace("routes:", "routez:"))
    wait_for(lambda: proxy.metric("agent_proxy_policy_reloads_total", {"result": "invalid"}) == 1)
    assert "routez" in proxy.holder.last_error
    assert client(proxy, NEW_KEY).chat.completions.create(model="m", messages=MESSAGES).choices
    assert proxy.metric("agent_proxy_policy_reloads_total", reloads_ok) == 1


def test_bad_edits_never_stop_the_watcher_and_the_next_good_edit_applies(proxy_factory, fake_upstream, tmp_path):
    path = tmp_path / "policy.yaml"
    original = basic_policy(fake_upstream.url, "server: {reload_interval_s: 0.05}")
    path.write_text(original)
    proxy = proxy_factory(path=path)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}

    def status() -> dict:
        code, body = proxy.get("/admin/status", admin)
        assert code == 200
        return orjson.loads(body)["policy"]

    bad_edits = [
        original.encode() + b"\n# \xff\xfe not UTF-8\n",
        (original + "anchors: &loop [*loop]\n").encode(),
    ]
    for count, text in enumerate(bad_edits, 1):
        path.write_bytes(text)
        wait_for(lambda c=count: proxy.metric("agent_proxy_policy_reloads_total", {"result": "invalid"}) == c)
        shown = status()
        assert shown["last_reload_error"] and shown["last_reload_error_at"] >= shown["loaded_at"]
    assert "recursive alias" in status()["last_reload_error"] and "line" in status()["last_reload_error"]
    assert client(proxy, DEMO_KEY).chat.completions.create(model="m", messages=MESSAGES).choices

    new_hash = hashlib.sha256(NEW_KEY.encode()).hexdigest()
    path.write_text(original.replace(DEMO_KEY_SHA256, new_hash))
    wait_for(lambda: proxy.metric("agent_proxy_policy_reloads_total", {"result": "ok"}) == 1)
    assert client(proxy, NEW_KEY).chat.completions.create(model="m", messages=MESSAGES).choices
    shown = status()
    assert shown["last_reload_error"] is None and shown["last_reload_error_at"] is not None

"""`/admin/status` as a page in a real headless Chromium: it renders, refreshes live, and holds no secret."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest
from multidict import CIMultiDict

from tests.fixtures.browser import CHROMIUM, Browser
from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy

ARTIFACTS = Path(os.environ.get("AGENT_PROXY_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
BASIC = "Basic " + base64.b64encode(f"admin:{ADMIN_KEY}".encode()).decode()


def policy(upstream_url: str) -> str:
    text = basic_policy(upstream_url, "callers:\n  default: {budget: {usd_per_day: 5}}")
    return text.replace("url: " + upstream_url, "url: " + upstream_url.replace("://", "://svc:hunter2@"), 1)


async def get(url: str, headers: dict[str, str]) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as answer:
        return answer.status, CIMultiDict(answer.headers), await answer.read()


async def test_a_browser_is_asked_for_the_admin_key_and_tools_get_json(proxy_factory, fake_upstream):
    proxy = proxy_factory(policy(fake_upstream.url))
    url = proxy.url + "/admin/status"
    status, headers, _ = await get(url, {"accept": "text/html"})
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    status, headers, page = await get(url, {"accept": "text/html,application/xhtml+xml", "authorization": BASIC})
    assert status == 200 and headers["content-type"].startswith("text/html") and b"<script>" in page
    assert "script-src 'sha256-" in headers["content-security-policy"]
    status, headers, body = await get(url, {"authorization": f"Bearer {ADMIN_KEY}"})
    data = orjson.loads(body)
    assert status == 200 and set(data) >= {"policy", "routes", "circuit_breakers", "traffic", "callers", "upstreams"}
    assert "hunter2" not in body.decode() and "svc" not in data["upstreams"]["up-openai"]["url"]
    status, _, _ = await get(url, {"authorization": f"Bearer {DEMO_KEY}", "accept": "text/html"})
    assert status == 403, "a key without the admin scope sees nothing"


async def test_the_cache_shows_its_lookups_and_what_its_hits_saved(proxy_factory, fake_upstream, tmp_path):
    proxy = proxy_factory(policy(fake_upstream.url) + "stages:\n  cache: {scope: caller}\n")
    url, admin = proxy.url + "/admin/status", {"authorization": BASIC}
    _, _, body = await get(url, admin)
    assert orjson.loads(body)["cache"] == {"lookups": {}, "saved_usd": 0}
    client = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    for _ in range(3):
        await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    await client.close()
    for _ in range(200):  # a hit's saving is counted once its caller has the answer
        _, _, body = await get(url, admin)
        cache = orjson.loads(body)["cache"]
        if cache["saved_usd"] > 0:
            break
        await asyncio.sleep(0.02)
    assert cache["lookups"] == {"miss": 1, "hit": 2} and cache["saved_usd"] > 0
    if CHROMIUM is not None:  # the page shows the same figures
        async with Browser(tmp_path / "profile") as browser:
            await browser.open(url, {"Authorization": BASIC})
            shown = await browser.text_when("cache", "v.includes('hit')")
        assert "miss 1, hit 2" in shown

    plain = proxy_factory(policy(fake_upstream.url))
    _, _, body = await get(plain.url + "/admin/status", admin)
    assert orjson.loads(body)["cache"] is None  # no route caches


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")
async def test_the_page_renders_in_chromium_and_its_figures_refresh_live(proxy_factory, fake_upstream, tmp_path):
    proxy = proxy_factory(policy(fake_upstream.url))
    client = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    await client.chat.completions.create(model="gpt-4o-mini", messages=messages)

    async with Browser(tmp_path / "profile") as browser:
        await browser.open(proxy.url + "/admin/status", {"Authorization": BASIC})
        before = int(await browser.text_when("requests", "/^[0-9]+$/.test(v)"))
        assert before >= 1
        assert "up-openai" in await browser.evaluate("document.getElementById('routes').textContent")
        assert await browser.evaluate("document.getElementById('cache').tBodies[0].textContent") == "none"  # no cache
        for _ in range(3):
            await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        after = int(await browser.text_when("requests", f"Number(v) >= {before + 3}"))
        assert after >= before + 3
        text = await browser.evaluate("document.body.textContent")
        assert "hunter2" not in text and ADMIN_KEY not in text and DEMO_KEY not in text
        shot = await browser.screenshot()
    await client.close()
    assert shot.startswith(b"\x89PNG") and len(shot) > 1000
    await asyncio.to_thread(save_artifact, "status-page.png", shot)


def save_artifact(name: str, data: bytes) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_bytes(data)

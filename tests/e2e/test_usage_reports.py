"""What callers see of accounting (nothing), bounded metric labels, the log line, and the usage reports."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import string
import subprocess
import sys
from pathlib import Path

import aiohttp
import anthropic
import openai
import orjson
import pytest

from tests.fixtures.http import post
from tests.fixtures.ledger import ledger_rows, wait_rows
from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
AUTH = {"authorization": f"Bearer {DEMO_KEY}"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def proxy(proxy_factory, fake_upstream, ledger):
    return proxy_factory(basic_policy(fake_upstream.url, f"ledger: {{path: {ledger}, flush_interval_ms: 20}}"))


def normalised(stream: bytes) -> bytes:
    """The upstream stamps each response with its own id and time; everything else must match."""
    stream = re.sub(rb"(chatcmpl-mock|cmpl-mock|call_mock)\d+", rb"\1N", stream)
    return re.sub(rb'"created":\d+', b'"created":0', stream)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": MESSAGES, "stream": True}),
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": MESSAGES, "tools": TOOLS, "stream": True}),
        (
            "/v1/chat/completions",
            {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": False}},
        ),
        ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "stream": True}),
        (
            "/v1/chat/completions",  # the caller asked: it gets the usage chunk, untouched
            {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
        ),
    ],
    ids=["chat", "tool-call", "include-usage-false", "completions", "caller-asked"],
)
def test_the_callers_stream_is_byte_identical_to_the_upstreams(proxy, fake_upstream, ledger, path, body):
    direct = post(fake_upstream.url + path, body)
    proxied = post(proxy.url + path, body, {**AUTH, "x-session-id": "bytes"})
    assert direct.status == proxied.status == 200
    assert normalised(proxied.body) == normalised(direct.body)
    assert fake_upstream.last(path).json()["stream_options"]["include_usage"] is True
    (row,) = wait_rows(ledger, "bytes")
    assert row["output_tokens"] > 0 and row["estimated"] == 0


def test_anthropic_streams_pass_byte_for_byte(proxy, fake_upstream):
    body = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": MESSAGES, "stream": True}
    direct = post(fake_upstream.url + "/v1/messages", body)
    proxied = post(proxy.url + "/v1/messages", body, AUTH)
    assert re.sub(rb"msg_mock\d+", b"", proxied.body) == re.sub(rb"msg_mock\d+", b"", direct.body)


def test_a_thousand_random_model_names_do_not_make_a_thousand_label_values(proxy, ledger):
    names = {"".join(random.choices(string.ascii_lowercase, k=12)) for _ in range(1000)}
    names |= {f"gpt-4o-{i}" for i in range(1000 - len(names))}

    async def send_all() -> None:
        limit = asyncio.Semaphore(32)
        async with aiohttp.ClientSession(headers=AUTH) as client:

            async def one(model: str) -> None:
                async with limit:
                    body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
                    async with client.post(proxy.openai_base_url + "/chat/completions", json=body) as response:
                        assert response.status == 200
                        await response.read()

            await asyncio.gather(*(one(model) for model in names))

    asyncio.run(send_all())
    wait_for(lambda: len(ledger_rows(ledger)) == 1000)
    assert {row["model_requested"] for row in ledger_rows(ledger)} == names
    _, body = proxy.get("/metrics")
    models = set(re.findall(r'model="([^"]*)"', body.decode()))
    assert models <= {"other", "gpt-4o"}, models
    assert proxy.metric("agent_proxy_unpriced_requests_total", {"caller": "default", "upstream": "up-openai"}) > 900


def test_the_request_log_line_carries_tokens_cost_and_the_estimate_flag(proxy, caplog):
    with caplog.at_level(logging.INFO, logger="agent_proxy.access"):
        client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-request-id": "r-1"})
        wait_for(lambda: any(getattr(r, "fields", {}).get("request_id") == "r-1" for r in caplog.records))
    (fields,) = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("request_id") == "r-1"]
    assert fields["tokens"]["output_tokens"] == 12 and fields["usage_estimated"] is False
    assert fields["cost_usd"] == pytest.approx((fields["tokens"]["input_tokens"] * 0.15 + 12 * 0.6) / 1e6)


def _metric_sum(proxy, name: str, **match: str) -> float:
    total = 0.0
    for family in proxy.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in match.items()):
                total += sample.value
    return total


def test_admin_usage_and_the_cli_report_totals_that_match_the_metrics(proxy, fake_upstream, ledger):
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4o", "local-model"):
        client.chat.completions.create(model=model, messages=MESSAGES)
    list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0).messages.create(
        model="claude-haiku-4-5", max_tokens=20, messages=MESSAGES
    )
    fake_upstream.behaviour.omit_usage = True
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    wait_for(lambda: _metric_sum(proxy, "agent_proxy_usage_estimated_requests_total") == 1)

    assert proxy.get("/admin/usage")[0] == 401
    assert proxy.get("/admin/usage", AUTH)[0] == 403
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert proxy.get("/admin/usage?by=nope", admin)[0] == 400
    status, body = proxy.get("/admin/usage?by=model&since=1h", admin)
    assert status == 200
    report = orjson.loads(body)
    totals = report["totals"]
    assert totals["requests"] == 7 and totals["unpriced"] == 1 and totals["estimated"] == 1
    for kind in ("input", "output", "cached_input", "cache_write", "reasoning"):
        assert totals[f"{kind}_tokens"] == _metric_sum(proxy, "agent_proxy_tokens_total", kind=kind)
    assert totals["cost_usd"] == pytest.approx(_metric_sum(proxy, "agent_proxy_cost_usd_total"))
    by_model = {row["key"]: row for row in report["rows"]}
    assert by_model["gpt-4o"]["requests"] == 4 and by_model["local-model"]["cost_usd"] == 0

    cli = [sys.executable, "-m", "proxy", "usage", "--ledger", str(ledger), "--since", "24h"]
    as_json = subprocess.run([*cli, "--by", "model", "--json"], capture_output=True, check=True, timeout=30)
    assert orjson.loads(as_json.stdout)["totals"] == totals
    table = subprocess.run([*cli, "--by", "caller", "--width", "200"], capture_output=True, check=True, timeout=30)
    text = table.stdout.decode()
    assert "usage by caller" in text and "demo" in text and f"{totals['cost_usd']:.6f}" in text
    missing = subprocess.run([*cli[:-4], "--ledger", str(ledger) + ".nope"], capture_output=True, timeout=30)
    assert missing.returncode == 2 and b"no ledger" in missing.stderr


def test_admin_usage_without_a_ledger_says_so(proxy_factory, fake_upstream):
    proxy = proxy_factory(basic_policy(fake_upstream.url))
    status, body = proxy.get("/admin/usage", {"authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 404 and orjson.loads(body)["error"]["code"] == "ledger_disabled"


def test_the_example_policy_prices_at_its_own_rates_and_skips_its_tool_route(proxy_factory, ledger):
    text = (Path(__file__).resolve().parents[2] / "policies/examples/accounting.yaml").read_text()
    proxy = proxy_factory(text.replace("./agent-proxy-ledger.sqlite3", str(ledger)))
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    answer = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"x-session-id": "ex"})
    usage = answer.usage
    assert post(proxy.url + "/tools/echo/x", {"q": 1}, {**AUTH, "x-session-id": "ex"}).status == 200
    (row,) = wait_rows(ledger, "ex")
    assert row["caller"] == "demo" and row["profile"] == "demo"
    assert row["cost_usd"] == pytest.approx((usage.prompt_tokens * 2.0 + usage.completion_tokens * 8.0) / 1e6)
    wait_for(lambda: proxy.metric("agent_proxy_cost_usd_total", {"caller": "demo", "model": "gpt-4o"}) > 0)
    assert len(ledger_rows(ledger)) == 1

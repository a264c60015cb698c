"""What a request may leave behind: bounded, clean log lines, no credentials in status or check output,
forwarding headers as the route says, and no ledger rows for callers nobody identified."""

from __future__ import annotations

import asyncio
import re
import sqlite3

import aiohttp
import orjson

from proxy.logs import MAX_MODEL_CHARS
from tests.fixtures.http import post, request
from tests.fixtures.logs import captured_log_lines
from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

EMAIL = "jane.doe@corp.io"
SSN = "078-05-1120"
MESSAGES = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": f"Bearer {DEMO_KEY}"}
# Bounded: no field of a request line grows with what the caller sent.
MAX_FIELD_CHARS = MAX_MODEL_CHARS + 16


def ledger_models(path) -> list[str | None]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT model_requested FROM requests")]


def request_lines(logs) -> list[dict]:
    return [line for line in logs.parsed() if line.get("msg") == "request"]


def assert_clean(line: dict, *secrets: str) -> None:
    text = orjson.dumps(line).decode()
    for secret in secrets:
        assert secret not in text
    for field, value in line.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                assert len(item) <= MAX_FIELD_CHARS, field
                assert item.isprintable(), field


def test_a_1mb_model_name_and_a_pii_path_make_bounded_clean_lines(proxy_factory, fake_upstream, tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    proxy = proxy_factory(basic_policy(fake_upstream.url, f"ledger: {{path: {ledger}, flush_interval_ms: 20}}"))
    hostile_model = 'gpt-4o\n{"level": "error"}\x00\u202e' + "m" * (1 << 20)
    with captured_log_lines() as logs:
        post(proxy.openai_base_url + "/chat/completions", {"model": hostile_model, "messages": MESSAGES}, AUTH)
        request("GET", f"{proxy.url}/v1/files/{EMAIL}/ssn/{SSN}?token=sk-query-secret", headers=AUTH)
        post(proxy.openai_base_url + "/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES}, AUTH)
        wait_for(lambda: len(request_lines(logs)) == 3)
    model_line, path_line, plain_line = request_lines(logs)
    for line in (model_line, path_line, plain_line):
        assert_clean(line, EMAIL, SSN, "sk-query-secret", "mmmmmmmmmmmmmmmmmmmm" * 10)
        assert len(orjson.dumps(line)) < 1024
    logged = model_line["model"]
    assert logged.startswith("gpt-4o???level?:??error????mmm") and logged.endswith("m...")
    assert len(logged) == MAX_MODEL_CHARS + 3 and re.fullmatch(r"[A-Za-z0-9._:/@+?-]+\.\.\.", logged)
    assert path_line["path"] == f"/v1/[{len(f'files/{EMAIL}/ssn/{SSN}')} bytes]"
    wait_for(lambda: len(ledger_models(ledger)) == 3)
    assert logged in ledger_models(ledger)  # the ledger row holds the same bounded name
    assert (plain_line["path"], plain_line["model"]) == ("/v1/chat/completions", "gpt-4o-mini")


def test_admin_status_and_check_show_urls_without_user_info(proxy_factory, fake_upstream, tmp_path, capsys):
    with_user = fake_upstream.url.replace("http://", "http://svc-user:hunter2-secret@")
    text = basic_policy(with_user)
    proxy = proxy_factory(text)
    status, body = proxy.get("/admin/status", {"authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 200
    assert b"hunter2-secret" not in body and b"svc-user" not in body and b"upstream-secret" not in body
    assert orjson.loads(body)["upstreams"]["up-openai"]["url"] == fake_upstream.url

    from proxy.cli import main

    path = tmp_path / "policy.yaml"
    path.write_text(text)
    assert main(["check", "--policy", str(path)]) == 0
    out = capsys.readouterr().out
    assert fake_upstream.url in out and "hunter2-secret" not in out and "svc-user" not in out


FORWARDING = {
    "x-forwarded-for": "203.0.113.7",
    "x-forwarded-host": "evil.example",
    "x-forwarded-proto": "https",
    "forwarded": "for=203.0.113.7;proto=https",
    "x-real-ip": "203.0.113.7",
}


def test_forwarding_headers_are_stripped_by_default_and_appended_when_asked(proxy_factory, fake_upstream):
    policy = basic_policy(fake_upstream.url).replace(
        "  - {name: openai, prefix: /v1/, upstream: up-openai}",
        "  - {name: behind-lb, prefix: /lb/v1/, rewrite_prefix: /v1/, upstream: up-openai, forwarded_headers: append}"
        "\n  - {name: openai, prefix: /v1/, upstream: up-openai}",
    )
    proxy = proxy_factory(policy)
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert post(proxy.openai_base_url + "/chat/completions", body, {**AUTH, **FORWARDING}).status == 200
    stripped = fake_upstream.last().headers
    assert not any(name.lower() in FORWARDING or name.lower().startswith("x-forwarded-") for name in stripped)

    assert post(proxy.url + "/lb/v1/chat/completions", body, {**AUTH, **FORWARDING}).status == 200
    appended = {k.lower(): v for k, v in fake_upstream.last().headers.items()}
    assert appended["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert appended["forwarded"] == "for=203.0.113.7;proto=https, for=127.0.0.1"
    assert appended["x-real-ip"] == "203.0.113.7"  # the chain in front is trusted in append mode
    assert appended["x-forwarded-host"] == "evil.example"

    assert post(proxy.url + "/lb/v1/chat/completions", body, AUTH).status == 200
    fresh = {k.lower(): v for k, v in fake_upstream.last().headers.items()}
    assert (fresh["x-forwarded-for"], fresh["x-real-ip"], fresh["x-forwarded-proto"]) == (
        "127.0.0.1",
        "127.0.0.1",
        "http",
    )


FLOOD = 4000


def test_a_bad_key_flood_leaves_the_ledger_unchanged(proxy_factory, fake_upstream, tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    proxy = proxy_factory(basic_policy(fake_upstream.url, f"ledger: {{path: {ledger}, flush_interval_ms: 20}}"))
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES})

    async def flood() -> list[int]:
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> int:
                headers = {"authorization": f"Bearer sk-bad-{i}", "content-type": "application/json"}
                async with session.post(proxy.openai_base_url + "/chat/completions", data=body, headers=headers) as r:
                    await r.read()
                    return r.status

            return await asyncio.gather(*(one(i) for i in range(FLOOD)))

    with captured_log_lines():  # the flood's request lines are not the test's output
        statuses = asyncio.run(flood())
    assert statuses == [401] * FLOOD
    assert post(proxy.openai_base_url + "/chat/completions", orjson.loads(body), AUTH).status == 200

    def rows() -> list[tuple]:
        with sqlite3.connect(ledger) as db:
            return db.execute("SELECT caller, status FROM requests").fetchall()

    wait_for(lambda: len(rows()) >= 1)
    assert rows() == [("demo", 200)]  # only the identified caller
    assert proxy.metric("agent_proxy_auth_failures_total", {"reason": "unknown_key"}) == FLOOD

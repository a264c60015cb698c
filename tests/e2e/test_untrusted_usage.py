"""Usage an upstream reports is untrusted: no number it sends can lose a record or stop the ledger."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import anthropic
import openai
import pytest

from proxy.app import SERVICES
from proxy.protocols.base import MAX_REPORTED_TOKENS
from tests.fixtures.ledger import ledger_rows
from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy
from tests.fixtures.servers import ServerThread
from tests.fixtures.usage_upstream import TEXT, USAGE_HEADER, usage_upstream
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "count me"}]
OPENAI_USAGE = [
    '{"prompt_tokens": 18446744073709551615, "completion_tokens": 5}',
    '{"prompt_tokens": -5, "completion_tokens": 5}',
    '{"prompt_tokens": 3.5, "completion_tokens": "7"}',
    '{"prompt_tokens": 4, "completion_tokens": 99999999999999999999999,'
    ' "completion_tokens_details": {"reasoning_tokens": -1}}',
    '{"prompt_tokens": 4, "completion_tokens": 5, "cost": NaN}',
    '{"prompt_tokens": 4, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 1.5e3}}',
]
ANTHROPIC_USAGE = [
    '{"input_tokens": 18446744073709551615, "output_tokens": 5}',
    '{"input_tokens": 4, "output_tokens": -5, "cache_read_input_tokens": "lots"}',
    '{"input_tokens": 4.25, "output_tokens": 5, "cost_usd": NaN}',
]


@pytest.fixture
def upstream() -> Iterator[ServerThread]:
    with usage_upstream() as server:
        yield server


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "ledger.sqlite3"


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")  # the SDKs meet the odd counts too
def test_hostile_counts_are_answered_recorded_and_estimated(proxy_factory, upstream, ledger):
    proxy = proxy_factory(basic_policy(upstream.url, f"ledger: {{path: {ledger}, flush_interval_ms: 20}}"))
    oai = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    claude = anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0)
    sent = 0
    for usage in OPENAI_USAGE:
        headers = {USAGE_HEADER: usage}
        reply = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers)
        assert reply.choices[0].message.content == TEXT
        stream = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == TEXT
        sent += 2
    for usage in ANTHROPIC_USAGE:
        headers = {USAGE_HEADER: usage}
        message = claude.messages.create(
            model="claude-sonnet-4-5", max_tokens=50, messages=MESSAGES, extra_headers=headers
        )
        assert message.content[0].text == TEXT
        with claude.messages.stream(
            model="claude-sonnet-4-5", max_tokens=50, messages=MESSAGES, extra_headers=headers
        ) as stream:
            assert stream.get_final_text() == TEXT
        sent += 2

    wait_for(lambda: len(ledger_rows(ledger)) == sent)
    rows = ledger_rows(ledger)
    for row in rows:
        for kind in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
            assert row[kind] is None or 0 <= row[kind] <= MAX_REPORTED_TOKENS
        assert row["input_tokens"] is not None and row["output_tokens"] is not None
        assert row["cost_usd"] is None or row["cost_usd"] >= 0
    # Every case but the cached-count one has an unbelievable input or output count (or no JSON at all): estimated.
    assert sum(row["estimated"] for row in rows) == sent - 2
    rejected = proxy.metric(
        "agent_proxy_stage_decisions_total", {"stage": "usage", "decision": "usage_rejected", "mode": "enforce"}
    )
    assert rejected == sent - 4  # the NaN bodies are not JSON: nothing was read from them to reject

    status, body = proxy.get("/admin/usage?since=all", {"authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 200 and b'"requests":' in body
    assert proxy.app[SERVICES].ledger.writer_alive
    assert proxy.metric("agent_proxy_ledger_records_total", {"result": "written"}) == sent


def test_an_encoding_is_loaded_by_the_first_count_that_needs_it_and_only_that_one(proxy_factory, upstream):
    from proxy.accounting import tokens

    tokens._loaded.clear()
    proxy = proxy_factory(basic_policy(upstream.url))  # usage estimates by default
    oai = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # usage reported: nothing to count
    assert tokens._loaded == {}
    oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={USAGE_HEADER: '{"prompt_tokens": 1}'})
    wait_for(lambda: tokens._loaded)  # counted after the caller has its answer
    assert set(tokens._loaded) == {"o200k_base"} and tokens._loaded["o200k_base"] is not None


def test_admin_usage_answers_while_the_database_is_locked(proxy_factory, upstream, ledger):
    extra = f"ledger: {{path: {ledger}, flush_interval_ms: 20, flush_timeout_ms: 100}}"
    proxy = proxy_factory(basic_policy(upstream.url, extra))
    oai = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    lock = sqlite3.connect(ledger, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the write lock: the writer waits on it
    try:
        oai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={USAGE_HEADER: '{"prompt_tokens": 1}'}
        )
        status, body = proxy.get("/admin/usage?since=all", {"authorization": f"Bearer {ADMIN_KEY}"})
        assert status == 200 and b'"rows":[]' in body  # answered with what is committed: nothing yet
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_for(lambda: len(ledger_rows(ledger)) == 1)
    assert proxy.app[SERVICES].ledger.writer_alive

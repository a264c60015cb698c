"""Redaction through the real proxy with the real SDKs, against the fake upstream.

The fake upstream answers with a given text split into given deltas (`x-mock-reply-text`),
so a value can be cut anywhere across events; the caller must read exactly what a
non-streamed answer gives.
"""

from __future__ import annotations

import json
import logging

import anthropic
import openai
import pytest

from tests.fixtures.http import post
from tests.fixtures.proxy_server import ADMIN_KEY, DEMO_KEY, basic_policy
from tests.fixtures.waiting import wait_for

KEY = "sk-" + "proj-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe"
TEXT = f"Write to john.doe@acmecorp.com, card 4111 1111 1111 1111, key {KEY}. Bye!"
REDACTED = "Write to [EMAIL], card [CARD], key [API_KEY]. Bye!"
MESSAGES = [{"role": "user", "content": "hello"}]
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
REDACTION = """
stages:
  redaction:
    output: [email, credit_card, api_key, city]
    custom: [{name: city, pattern: Paris}]
"""


def _reply(pieces: list[str]) -> dict[str, str]:
    return {"x-mock-reply-text": json.dumps(pieces)}


def _splits(text: str) -> list[list[str]]:
    return [
        list(text),
        [text[i : i + 3] for i in range(0, len(text), 3)],
        [text[:20], text[20:23], text[23:50], text[50:]],
        [text],
    ]


@pytest.fixture
def proxy(proxy_factory, fake_upstream):
    return proxy_factory(basic_policy(fake_upstream.url, REDACTION))


def test_openai_chat_streamed_reads_exactly_the_whole_answer(oai):
    whole = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=_reply([TEXT]))
    assert whole.choices[0].message.content == REDACTED
    for pieces in _splits(TEXT):
        stream = oai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=_reply(pieces)
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REDACTED
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_tool_call_arguments(oai):
    whole = oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL]
    )
    assert whole.choices[0].message.tool_calls[0].function.arguments == '{"city":"[CITY]"}'
    stream = oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL], stream=True
    )
    arguments = "".join(
        call.function.arguments or ""
        for chunk in stream
        if chunk.choices and chunk.choices[0].delta.tool_calls
        for call in chunk.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {"city": "[CITY]"}


def test_openai_responses_api(oai):
    whole = oai.responses.create(model="gpt-4o", input="hi", extra_headers=_reply([TEXT]))
    assert whole.output_text == REDACTED
    with oai.responses.stream(model="gpt-4o", input="hi", extra_headers=_reply(list(TEXT))) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert deltas == final.output_text == REDACTED


def test_anthropic_text_and_tool_use(claude):
    message = claude.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES, extra_headers=_reply([TEXT]))
    assert message.content[0].text == REDACTED
    for pieces in _splits(TEXT)[:2]:
        with claude.messages.stream(
            model="claude-x", max_tokens=64, messages=MESSAGES, extra_headers=_reply(pieces)
        ) as s:
            assert s.get_final_text() == REDACTED
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    weather = [{"role": "user", "content": "weather?"}]
    assert claude.messages.create(model="claude-x", max_tokens=64, messages=weather, tools=tools).content[0].input == {
        "city": "[CITY]"
    }
    with claude.messages.stream(model="claude-x", max_tokens=64, messages=weather, tools=tools) as stream:
        assert stream.get_final_message().content[0].input == {"city": "[CITY]"}


def test_counts_go_to_metrics_and_the_log_line_never_the_values(proxy, oai, caplog):
    caplog.set_level(logging.INFO, logger="agent_proxy")
    oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={**_reply([TEXT, " again a@b.co"]), "x-request-id": "red-1"}
    )
    labels = {"route": "openai", "direction": "output"}
    wait_for(lambda: proxy.metric("agent_proxy_redactions_total", {**labels, "detector": "email"}) == 2)
    assert proxy.metric("agent_proxy_redactions_total", {**labels, "detector": "credit_card"}) == 1
    assert proxy.metric("agent_proxy_redactions_total", {**labels, "detector": "openai_key"}) == 1
    wait_for(lambda: any(getattr(r, "fields", {}).get("request_id") == "red-1" for r in caplog.records))
    (fields,) = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("request_id") == "red-1"]
    assert fields["redactions"] == {"output": {"email": 2, "credit_card": 1, "openai_key": 1}}
    assert "redaction:redacted" in fields["decisions"]
    logged = caplog.text + "".join(str(getattr(r, "fields", "")) for r in caplog.records)
    assert "john.doe" not in logged and "4111" not in logged and KEY not in logged


# ---- pseudonymisation: the provider never sees the values, the caller gets them back


def test_pseudonymised_prompt_round_trip(proxy_factory, fake_upstream):
    extra = "stages:\n  redaction: {input: [email, phone], input_action: pseudonymise}\n"
    proxy = proxy_factory(basic_policy(fake_upstream.url, extra))
    oai = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    prompt = "Email jane@corp.io or call +44 20 7946 0958, not jane@corp.io's backup bob@corp.io"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    answer = oai.chat.completions.create(model="gpt-4o", messages=messages).choices[0].message.content
    sent = fake_upstream.last("/v1/chat/completions").body.decode()
    for value in ("jane@corp.io", "bob@corp.io", "7946"):
        assert value not in sent
    assert "[EMAIL_1]" in sent and "[PHONE_1]" in sent and "[EMAIL_2]" in sent
    assert answer.startswith("Mock answer to: Email jane@corp.io or call +44 20 7946 0958")

    reply = ["Done: wrote to [EM", "AIL_1] and [", "EMAIL_2", "], phoned [PHONE_1", "]; [EMAIL_7] is unknown."]
    expected = "Done: wrote to jane@corp.io and bob@corp.io, phoned +44 20 7946 0958; [EMAIL_7] is unknown."
    stream = oai.chat.completions.create(model="gpt-4o", messages=messages, stream=True, extra_headers=_reply(reply))
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected

    claude = anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0)
    with claude.messages.stream(
        model="claude-x",
        max_tokens=64,
        system="Use [EMAIL_1]",
        messages=[{"role": "user", "content": prompt}],
        extra_headers=_reply(reply),
    ) as stream:
        assert stream.get_final_text() == expected
    sent = fake_upstream.last("/v1/messages").json()
    assert "jane@corp.io" not in json.dumps(sent) and sent["messages"][0]["content"].startswith("Email [EMAIL_1]")


# ---- actions


def test_block_raises_the_sdk_error(proxy_factory, fake_upstream):
    extra = REDACTION + "    actions: {api_key: block}\n"
    proxy = proxy_factory(basic_policy(fake_upstream.url, extra))
    oai = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as err:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=_reply([TEXT]))
    assert err.value.code == "content_blocked" and KEY not in str(err.value)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in oai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=_reply(list(TEXT))
        ):
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(received) == "Write to [EMAIL], card [CARD], key "
    claude = anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        claude.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES, extra_headers=_reply([TEXT]))
    wait_for(
        lambda: (
            proxy.metric(
                "agent_proxy_stage_decisions_total", {"stage": "redaction", "decision": "blocked", "mode": "enforce"}
            )
            == 3
        )
    )


def test_hash_is_stable_per_caller(proxy_factory, fake_upstream):
    extra = "stages:\n  redaction: {output: [email], action: hash, hash_secret: test-secret-0123456789}\n"
    proxy = proxy_factory(basic_policy(fake_upstream.url, extra))

    def ask(key: str) -> str:
        client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=key, max_retries=0)
        reply = client.chat.completions.create(model="m", messages=MESSAGES, extra_headers=_reply(["a@b.co x"]))
        return reply.choices[0].message.content.split()[0]

    first, again, other = ask(DEMO_KEY), ask(DEMO_KEY), ask(ADMIN_KEY)
    assert first == again != other
    assert first.startswith("[EMAIL_") and "a@b.co" not in first + other


def test_shadow_mode_changes_nothing_and_records(proxy_factory, fake_upstream):
    extra = "stages:\n  redaction: {mode: shadow, output: [email]}\n"
    proxy = proxy_factory(basic_policy(fake_upstream.url, extra))
    oai = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    stream = oai.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_headers=_reply(list("to a@b.co"))
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "to a@b.co"
    labels = {"stage": "redaction", "decision": "redacted", "mode": "shadow"}
    wait_for(lambda: proxy.metric("agent_proxy_stage_decisions_total", labels) == 1)
    assert (
        proxy.metric("agent_proxy_redactions_total", {"detector": "email", "route": "openai", "direction": "output"})
        == 0
    )


# ---- plain HTTP tools


def test_tool_responses_have_their_json_string_values_redacted(proxy_factory, fake_upstream):
    policy = f"""
version: 1
upstreams:
  tool: {{url: {fake_upstream.url}, protocol: http}}
routes:
  - {{name: echo, prefix: /tools/echo/, upstream: tool, auth: none}}
stages:
  redaction: {{output: [email, password]}}
"""
    proxy = proxy_factory(policy)
    body = {"user": {"email": "a@b.co", "password": "hunter22", "age": 42}, "notes": "mail c@d.io"}
    response = post(proxy.url + "/tools/echo/lookup", body)
    assert response.status == 200
    assert int(response.headers["content-length"]) == len(response.body)
    echoed = response.json()["body"]
    assert echoed == {"user": {"email": "[EMAIL]", "password": "[SECRET]", "age": 42}, "notes": "mail [EMAIL]"}


def test_without_redaction_the_chain_does_not_observe_responses(proxy_factory, fake_upstream):
    proxy = proxy_factory(basic_policy(fake_upstream.url, 'stages: {usage: {mode: "off"}}'))
    assert all(not route.chain.observes_response for route in proxy.holder.current.routes)


def test_masked_prompt_is_not_restored(proxy_factory, fake_upstream):
    proxy = proxy_factory(basic_policy(fake_upstream.url, "stages:\n  redaction: {input: [email]}\n"))
    oai = openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    answer = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "ping jane@corp.io"}])
    assert answer.choices[0].message.content.startswith("Mock answer to: ping [EMAIL]")
    assert "jane@corp.io" not in fake_upstream.last().body.decode()
    labels = {"detector": "email", "route": "openai", "direction": "input"}
    wait_for(lambda: proxy.metric("agent_proxy_redactions_total", labels) == 1)

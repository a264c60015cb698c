"""The chain runner: hook order, local replies, shadow mode, held-back events, on_complete isolation."""

from __future__ import annotations

import logging
import tracemalloc
from typing import ClassVar

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import Forbidden
from proxy.exchange import Exchange, Reply
from proxy.pipeline import Chain, SharedStageFactory, Stage, StageFactory
from proxy.policy.compile import compile_policy
from proxy.policy.load import policy_from_text
from proxy.protocols.sse import SSEEvent
from tests.fixtures.policies import OPENAI_NO_AUTH

POLICY = OPENAI_NO_AUTH


@pytest.fixture(scope="module")
def route():
    return compile_policy(policy_from_text(POLICY, env={})).routes[0]


@pytest.fixture
def ex(route) -> Exchange:
    return Exchange(
        request_id="rid",
        method="POST",
        path="/v1/chat/completions",
        query_string="",
        headers=CIMultiDictProxy(CIMultiDict()),
        route=route,
        protocol=route.protocol,
        body=b'{"model":"m","messages":[]}',
    )


def ev(text: str) -> SSEEvent:
    return SSEEvent.build(text)


def texts(events: list[SSEEvent]) -> list[str | None]:
    return [e.data for e in events]


class Recorder(Stage):
    """Logs every hook call as (name, hook) and tags the events and bodies it passes."""

    def __init__(self, name: str, log: list[tuple[str, str]], mode: str = "enforce"):
        super().__init__(mode)  # type: ignore[arg-type]
        self.name = name  # type: ignore[misc]
        self.log = log

    async def on_request_headers(self, ex):
        self.log.append((self.name, "request_headers"))

    async def on_request_body(self, ex):
        self.log.append((self.name, "request_body"))

    def on_response_headers(self, ex):
        self.log.append((self.name, "response_headers"))

    def on_response_event(self, ex, event):
        self.log.append((self.name, "event"))
        return [ev(f"{event.data}+{self.name}")]

    def on_response_body(self, ex, body):
        self.log.append((self.name, "body"))
        return body + self.name.encode()

    def on_response_end(self, ex):
        self.log.append((self.name, "end"))
        return []

    async def on_complete(self, ex):
        self.log.append((self.name, "complete"))


class Replier(Recorder):
    async def on_request_body(self, ex):
        await super().on_request_body(ex)
        self.decide(ex, "hit")
        return Reply(200, b"local", reason="cache_hit")


class Refuser(Recorder):
    async def on_request_headers(self, ex):
        await super().on_request_headers(ex)
        raise Forbidden("not for you", code="model_not_allowed")


class Holder(Recorder):
    """Holds every event back and emits them, joined, when the stream ends (like a redaction tail)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.held: list[str] = []

    def on_response_event(self, ex, event):
        self.log.append((self.name, "event"))
        self.held.append(event.data or "")
        return []

    def on_response_end(self, ex):
        self.log.append((self.name, "end"))
        return [ev("|".join(self.held) + f"+{self.name}")]


class Failer(Recorder):
    async def on_complete(self, ex):
        await super().on_complete(ex)
        raise RuntimeError("ledger is down")


class Factory(StageFactory):
    observes_response: ClassVar[bool] = True  # a Recorder tags events and bodies

    def __init__(self, cls: type[Recorder], name: str, log: list, mode: str = "enforce"):
        super().__init__(mode)  # type: ignore[arg-type]
        self.cls, self.stage_name, self.log = cls, name, log
        self.name = name  # type: ignore[misc]
        self.created = 0

    def create(self) -> Stage:
        self.created += 1
        return self.cls(self.stage_name, self.log, self.mode)


def chain(log: list, *specs: tuple[type[Recorder], str] | tuple[type[Recorder], str, str]) -> Chain:
    return Chain([Factory(spec[0], spec[1], log, *spec[2:]) for spec in specs])


async def test_request_hooks_in_order_response_hooks_in_reverse(ex):
    log: list = []
    run = chain(log, (Recorder, "a"), (Recorder, "b"), (Recorder, "c")).start()
    assert await run.request_headers(ex) is None
    assert await run.request_body(ex) is None
    run.response_headers(ex)
    out = run.response_events(ex, [ev("x"), ev("y")])
    body = run.response_body(ex, b"body:")
    assert run.response_end(ex) == []
    await run.complete(ex)
    assert texts(out) == ["x+c+b+a", "y+c+b+a"]
    assert body == b"body:cba"
    hooks = [(hook, [n for n, h in log if h == hook]) for hook in dict.fromkeys(h for _, h in log)]
    assert hooks == [
        ("request_headers", ["a", "b", "c"]),
        ("request_body", ["a", "b", "c"]),
        ("response_headers", ["c", "b", "a"]),
        ("event", ["c", "c", "b", "b", "a", "a"]),
        ("body", ["c", "b", "a"]),
        ("end", ["c", "b", "a"]),
        ("complete", ["c", "b", "a"]),
    ]


async def test_a_reply_short_circuits_the_request_phase(ex):
    log: list = []
    run = chain(log, (Recorder, "a"), (Replier, "cache"), (Recorder, "c")).start()
    reply = await run.request_body(ex)
    assert reply is not None and reply.body == b"local"
    assert log == [("a", "request_body"), ("cache", "request_body")]
    assert ex.decisions == [("cache", "hit", "enforce"), ("cache", "replied:cache_hit", "enforce")]


async def test_an_enforcing_refusal_is_recorded_and_raised(ex):
    log: list = []
    run = chain(log, (Refuser, "policy"), (Recorder, "b")).start()
    with pytest.raises(Forbidden):
        await run.request_headers(ex)
    assert ex.decisions == [("policy", "refused:model_not_allowed", "enforce")]
    assert log == [("policy", "request_headers")]


async def test_shadow_mode_records_but_never_acts(ex):
    log: list = []
    run = chain(
        log, (Refuser, "guard", "shadow"), (Replier, "cache", "shadow"), (Holder, "redact", "shadow"), (Recorder, "z")
    ).start()
    assert await run.request_headers(ex) is None
    assert await run.request_body(ex) is None
    assert ex.decisions == [
        ("guard", "refused:model_not_allowed", "shadow"),
        ("cache", "hit", "shadow"),
        ("cache", "replied:cache_hit", "shadow"),
    ]
    # Every later stage still ran: the shadow stages did not stop the request phase.
    assert ("z", "request_headers") in log and ("z", "request_body") in log
    # Shadow stages see the events, but what they return is discarded.
    out = run.response_events(ex, [ev("x")])
    assert texts(out) == ["x+z"]
    assert ("redact", "event") in log and ("guard", "event") in log
    assert texts(run.response_end(ex)) == []  # the shadow holder's flush is discarded too
    assert run.response_body(ex, b"b:") == b"b:z"


async def test_off_factories_are_dropped(ex):
    log: list = []
    built = chain(log, (Recorder, "a"), (Refuser, "off-stage", "off"), (Recorder, "s", "shadow"))
    assert [f.stage_name for f in built.factories] == ["a", "s"]
    assert built.names == ["a", "s(shadow)"]
    run = built.start()
    assert built.factories[0].created == 1
    await run.request_headers(ex)
    assert [n for n, _ in log] == ["a", "s"]
    assert Chain([]).start().stages == []


class Blind(Factory):
    """Declares that its stages never look at response bodies or events."""

    observes_response: ClassVar[bool] = False


def test_observes_response_is_any_enabled_factory():
    assert not Chain([Blind(Recorder, "a", [])]).observes_response
    assert Chain([Blind(Recorder, "a", []), Factory(Recorder, "o", [])]).observes_response
    assert not Chain([Blind(Recorder, "a", []), Factory(Recorder, "o", [], "off")]).observes_response


async def test_body_and_event_hooks_skip_stages_that_do_not_observe_responses(ex):
    log: list = []
    run = Chain([Blind(Recorder, "blind", log), Factory(Recorder, "seer", log)]).start()
    run.response_headers(ex)
    out = run.response_events(ex, [ev("x")])
    assert run.response_body(ex, b"body:") == b"body:seer"
    run.response_end(ex)
    assert texts(out) == ["x+seer"]
    assert ("blind", "response_headers") in log  # the head is every stage's (limits read it)
    assert [hook for name, hook in log if name == "blind"] == ["response_headers"]


def test_a_fresh_stage_per_request():
    factory = Factory(Holder, "h", [])
    built = Chain([factory])
    first, second = built.start(), built.start()
    assert first.stages[0] is not second.stages[0] and factory.created == 2


async def test_held_events_flushed_at_the_end_still_pass_the_outer_stages(ex):
    log: list = []
    # Chain order: outer, holder, inner. Response hooks run inner -> holder -> outer.
    run = chain(log, (Recorder, "outer"), (Holder, "holder"), (Recorder, "inner")).start()
    assert run.response_events(ex, [ev("a")]) == []
    assert run.response_events(ex, [ev("b"), ev("c")]) == []
    assert texts(run.response_end(ex)) == ["a+inner|b+inner|c+inner+holder+outer"]


async def test_flushes_of_inner_stages_pass_holders_further_out(ex):
    log: list = []
    run = chain(log, (Holder, "h1"), (Recorder, "mid"), (Holder, "h2")).start()
    assert run.response_events(ex, [ev("a")]) == []
    # h2 flushes "a+h2"; mid tags it; h1 takes it as an event, then flushes everything it holds.
    assert texts(run.response_end(ex)) == ["a+h2+mid+h1"]
    assert [h for n, h in log if n == "h1"] == ["event", "end"]


async def test_on_complete_failure_is_logged_and_others_still_run(ex, caplog):
    log: list = []
    run = chain(log, (Recorder, "a"), (Failer, "ledger"), (Recorder, "c")).start()
    with caplog.at_level(logging.ERROR, logger="agent_proxy.pipeline"):
        await run.complete(ex)
    assert [n for n, h in log if h == "complete"] == ["c", "ledger", "a"]
    [record] = caplog.records
    assert "ledger" in record.getMessage() and record.exc_info[0] is RuntimeError


async def test_the_compiled_route_has_a_chain(route):
    assert route.label == "chat" and isinstance(route.chain, Chain)
    assert route.chain.names == ["usage"]  # auth: none drops the auth stage


def test_a_rewritten_body_is_kept_at_its_own_size(ex):
    """It lives as long as the request (retries, a whole stream): not in orjson's larger buffer."""
    prompt = "x" * 1_000_000
    ex.replace_request_json({"model": "m", "messages": [{"role": "user", "content": prompt}]})
    tracemalloc.start()
    try:
        body = ex.body_to_send()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert orjson.loads(body)["messages"][0]["content"] == prompt
    assert held < 1.5 * len(body)  # orjson 3.13 alone keeps 8.3 MB for this 1 MB body


class BodyOnly(Stage):
    """Keeps nothing per request and does something on the request body only."""

    name: ClassVar[str] = "body_only"

    def __init__(self, factory: StageFactory):
        super().__init__(factory.mode)

    async def on_request_body(self, ex):
        ex.decisions.append((self.name, "read", self.mode))


class SharedBodyOnly(SharedStageFactory):
    stage = BodyOnly


async def test_a_shared_stage_serves_every_request_and_its_pass_through_hooks_are_still_skipped(ex):
    built = Chain([SharedBodyOnly()])
    first, second = built.start(), built.start()
    assert first.stages[0] is second.stages[0]
    assert (first.admitting, first.heading, first.completing) == ([], [], [])
    assert first.reading == first.stages
    await second.request_body(ex)
    assert ex.decisions == [("body_only", "read", "enforce")]

"""The ledger row the usage stage builds: every column from where it comes (the row is built positionally)."""

from __future__ import annotations

import time

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.accounting.ledger import COLUMNS
from proxy.exchange import Caller, Exchange, Outcome, ToolCall
from proxy.policy.compile import compile_policy
from proxy.policy.load import policy_from_text
from proxy.protocols.base import Usage
from tests.fixtures.policies import OPENAI_NO_AUTH

POLICY = OPENAI_NO_AUTH


def test_every_field_of_the_record_comes_from_its_own_source():
    route = compile_policy(policy_from_text(POLICY, env={})).routes[0]
    ex = Exchange(
        request_id="rid-1", method="POST", path="/v1/chat/completions", query_string="",
        headers=CIMultiDictProxy(CIMultiDict({"X-Session-Id": "sess-9"})), route=route, protocol=route.protocol,
        body=b'{"model":"asked-model","messages":[]}',
    )  # fmt: skip
    assert ex.request_json  # parsed, as the stages before usage have it
    ex.caller = Caller(name="alice", key_id="key-7", profile="team-a")
    ex.upstream_name, ex.model_served, ex.status, ex.outcome, ex.streaming = "up", "served-model", 201, Outcome.OK, True
    ex.usage = Usage(
        input_tokens=11, output_tokens=12, cached_input_tokens=13, cache_write_tokens=14, reasoning_tokens=15
    )
    ex.cost_usd, ex.cache_hit, ex.usage_estimated = 0.5, True, True
    ex.first_byte_at, ex.finished_at = ex.started + 0.25, ex.started + 0.75
    ex.tool_call = ToolCall(server="files", tool="read", outcome="ok")
    stage = next(s for s in route.chain.start().stages if s.name == "usage")
    row = stage._record(ex, "priced-model", ex.model_requested)
    fields = dict(zip(COLUMNS, row, strict=True))
    assert abs(fields.pop("ts") - time.time()) < 60  # when the request started, in unix time
    assert fields == {
        "request_id": "rid-1", "caller": "alice", "key_id": "key-7", "profile": "team-a", "route": route.label,
        "upstream": "up", "model_requested": "asked-model", "model_served": "served-model",
        "model_priced": "priced-model", "status": 201, "outcome": "ok", "stream": True, "input_tokens": 11,
        "output_tokens": 12, "cached_input_tokens": 13, "cache_write_tokens": 14, "reasoning_tokens": 15,
        "cost_usd": 0.5, "latency_ms": 750.0, "ttfb_ms": 250.0, "cache_hit": True, "estimated": True,
        "session_id": "sess-9", "tool_server": "files", "tool": "read", "tool_outcome": "ok",
    }  # fmt: skip
    assert [type(fields[c]) for c in ("stream", "cache_hit", "estimated")] == [int, int, int]  # bound as 1 / 0

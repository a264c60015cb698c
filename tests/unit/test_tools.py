"""The tool components on their own: JSON-RPC reading, argument errors, the schema cache, tool labels."""

from __future__ import annotations

import base64

import pytest

from proxy.protocols import jsonrpc
from proxy.protocols.sse import SSEEvent
from proxy.tools.arguments import compile_schema, problem, schema_problem
from proxy.tools.config import OTHER_TOOL, ToolGovConfig
from proxy.tools.guards import ToolLabels
from proxy.tools.schemas import SchemaCache

SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}}}},
    },
    "required": ["path"],
}


def test_a_batch_and_a_single_message_are_read():
    messages, batch = jsonrpc.parse_body(
        b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"n"}]'
    )
    assert batch and [m.is_request for m in messages] == [True, False]
    (single,), batch = jsonrpc.parse_body(b'{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}')
    assert not batch and single.id == "a" and single.params == {"name": "x"}


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{", -32700), (b"[]", -32600), (b"[1]", -32600), (b'{"id":1,"method":"m"}', -32600), (b'"x"', -32600)],
)
def test_what_is_not_json_rpc_is_told_apart(body, code):
    with pytest.raises(jsonrpc.NotJsonRpc) as refused:
        jsonrpc.parse_body(body)
    assert refused.value.code == code


def test_routing_header_values_decode_like_the_sdk_encodes_them():
    encoded = "=?base64?" + base64.b64encode("récupérer".encode()).decode() + "?="
    assert jsonrpc.header_value(encoded) == "récupérer"
    assert jsonrpc.header_value("read_file") == "read_file"
    assert jsonrpc.header_value("=?base64?!!!?=") is None


def test_a_rewritten_event_keeps_its_id_for_resumption():
    event = SSEEvent(b'event: message\nid: 42\ndata: {"a":1}\n\n')
    rewritten = jsonrpc.with_payload(event, {"a": 2})
    assert rewritten.raw == b'event: message\nid: 42\ndata: {"a":2}\n\n' and rewritten.json() == {"a": 2}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, "'arguments.path' is required"),
        ({"path": 1}, "'arguments.path' is invalid: expected string"),
        ({"path": "p", "items": [{"id": 1}, {"id": "two"}]}, "'arguments.items[1].id' is invalid: expected integer"),
        ({"path": "p"}, None),
    ],
)
def test_argument_errors_name_the_field(value, expected):
    validator = compile_schema(SCHEMA)
    assert validator is not None
    assert problem(validator, value, "arguments") == expected


def test_a_secret_value_is_never_echoed_in_an_error():
    validator = compile_schema({"type": "object", "properties": {"token": {"enum": ["a", "b"]}}})
    assert validator is not None
    message = problem(validator, {"token": "sk-live-SECRET"}, "arguments")
    assert message is not None and "SECRET" not in message and "'arguments.token'" in message


def test_unusable_schemas_are_told_apart():
    assert schema_problem({"type": "no-such-type"}) is not None
    assert schema_problem([]) is not None
    assert compile_schema({"type": 5}) is None
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        ToolGovConfig(body_schema={"type": "no-such-type"})


def test_the_schema_cache_is_bounded_in_sessions_tools_and_time():
    now = [0.0]
    cache = SchemaCache(max_sessions=2, max_tools=2, ttl_s=10, clock=lambda: now[0])
    tools = [{"name": name, "inputSchema": SCHEMA} for name in ("a", "b", "c")]
    cache.store(("s", "c", "1"), tools)
    assert cache.validator(("s", "c", "1"), "a")[0] and not cache.validator(("s", "c", "1"), "c")[0]
    cache.store(("s", "c", "1"), [{"name": "a", "inputSchema": {"type": "object"}}])  # a later page replaces it
    assert problem(cache.validator(("s", "c", "1"), "a")[1], {}, "arguments") is None  # type: ignore[arg-type]
    cache.store(("s", "c", "2"), tools)
    cache.store(("s", "c", "3"), tools)
    assert len(cache) == 2
    now[0] = 11
    assert cache.validator(("s", "c", "3"), "a") == (False, None)


def test_tool_labels_are_bounded_per_server():
    labels = ToolLabels(2)
    assert [labels.label("files", name) for name in ("a", "b", "c", "a")] == ["a", "b", OTHER_TOOL, "a"]
    assert labels.label("other", "c") == "c"
    assert labels.label("files", "bad name\n") == OTHER_TOOL


def test_per_tool_settings_take_the_first_matching_pattern():
    config = ToolGovConfig(tools={"read_*": {"timeout_s": 1}, "*": {"timeout_s": 9}})
    assert config.settings_for("read_file").timeout_s == 1  # type: ignore[union-attr]
    assert config.settings_for("write").timeout_s == 9  # type: ignore[union-attr]

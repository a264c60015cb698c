"""JSON-RPC 2.0 as MCP carries it over streamable HTTP: requests, notifications, responses, batches.

A POST body holds one message or a batch (an array; revisions before 2025-06-18 allowed
them). An answer is JSON (one message or an array) or an SSE stream whose events each carry
one message. Only what the proxy governs is read (a request's method, id and params, a
response's id and result); every other member is kept as it came, and methods the proxy
does not know pass through untouched.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.protocols.sse import SSEEvent

# Standard JSON-RPC codes, and the proxy's own in the implementation-defined band -32000..-32019
# (MCP reserves -32020 and beyond for the specification).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
HEADER_MISMATCH = -32020  # MCP 2026-07-28: a routing header disagrees with the body
TOOL_NOT_ALLOWED = -32003
TOOL_RATE_LIMITED = -32004
TOOL_UNAVAILABLE = -32005  # the tool's circuit breaker is open
BATCH_REFUSED = -32006  # another request of the same batch was refused: nothing was sent

Id = str | int | None


@dataclass(frozen=True, slots=True)
class Message:
    """One JSON-RPC message, as read from a request body or an answer."""

    raw: dict[str, Any]

    @property
    def method(self) -> str | None:
        method = self.raw.get("method")
        return method if isinstance(method, str) else None

    @property
    def id(self) -> Id:
        value = self.raw.get("id")
        return value if isinstance(value, str | int) and not isinstance(value, bool) else None

    @property
    def is_request(self) -> bool:
        """A request expects an answer; a notification (no `id`) does not."""
        return self.method is not None and "id" in self.raw

    @property
    def is_response(self) -> bool:
        return self.method is None and ("result" in self.raw or "error" in self.raw)

    @property
    def params(self) -> dict[str, Any]:
        params = self.raw.get("params")
        return params if isinstance(params, dict) else {}

    @property
    def result(self) -> dict[str, Any] | None:
        result = self.raw.get("result")
        return result if isinstance(result, dict) else None


class NotJsonRpc(ValueError):
    """A body that is not JSON-RPC: the caller gets a parse or invalid-request error."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def parse_body(body: bytes) -> tuple[list[Message], bool]:
    """The messages of a POST body, and whether it was a batch."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise NotJsonRpc(PARSE_ERROR, "the request body is not valid JSON") from None
    return read_payload(payload)


def read_payload(payload: Any) -> tuple[list[Message], bool]:
    batch = isinstance(payload, list)
    items = payload if batch else [payload]
    if batch and not items:
        raise NotJsonRpc(INVALID_REQUEST, "an empty batch is not a JSON-RPC request")
    messages = []
    for item in items:
        if not isinstance(item, dict) or item.get("jsonrpc") != "2.0":
            raise NotJsonRpc(INVALID_REQUEST, "every message must be a JSON-RPC 2.0 object")
        messages.append(Message(item))
    return messages, batch


def error(id_: Id, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": err}


def answer_body(errors: list[dict[str, Any]], batch: bool) -> bytes:
    """A JSON answer made of the proxy's own error responses (one, or a batch's)."""
    return orjson.dumps(errors if batch else errors[0])


def answer_messages(payload: Any) -> list[dict[str, Any]]:
    """The responses in a JSON answer or one SSE event's payload (not the server's requests or notifications)."""
    items = payload if isinstance(payload, list) else [payload]
    return [item for item in items if isinstance(item, dict) and "method" not in item]


def answer_id(message: dict[str, Any]) -> Id:
    value = message.get("id")
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def call_outcome(message: dict[str, Any]) -> str:
    """How a `tools/call` answer ended: a JSON-RPC error, the tool's own error (`isError`), or a result."""
    if "error" in message:
        return "rpc_error"
    result = message.get("result")
    return "tool_error" if isinstance(result, dict) and result.get("isError") is True else "ok"


def keep_tools(result: dict[str, Any], allowed: Callable[[str], bool], apply: bool = True) -> int:
    """Removes from a `tools/list` result the tools not `allowed`; how many. A list that lost tools is the
    caller's own: a 2026-07-28 `cacheScope: public` hint becomes `private`."""
    tools = result.get("tools")
    if not isinstance(tools, list):
        return 0
    kept = [t for t in tools if isinstance(t, dict) and isinstance(n := t.get("name"), str) and allowed(n)]
    hidden = len(tools) - len(kept)
    if hidden and apply:
        result["tools"] = kept
        if result.get("cacheScope") == "public":
            result["cacheScope"] = "private"
    return hidden


# ---- MCP 2026-07-28 routing headers: mirrored from the body, so they must agree with it

METHOD_HEADER = "mcp-method"
NAME_HEADER = "mcp-name"
_B64_SENTINEL = re.compile(r"=\?base64\?(.*)\?=", re.DOTALL)


def headers_agree(headers: Mapping[str, str], method: str | None, name: str) -> bool:
    """MCP 2026-07-28 mirrors the method and tool name in headers a server may route by: they must agree."""
    sent = headers.get(METHOD_HEADER)
    if sent is not None and sent != method:
        return False
    named = headers.get(NAME_HEADER)
    return named is None or header_value(named) == name


def header_value(value: str | None) -> str | None:
    """A routing header's value, decoded from the `=?base64?...?=` form; None when absent or malformed."""
    if value is None:
        return None
    match = _B64_SENTINEL.fullmatch(value)
    if match is None:
        return value
    try:
        decoded = base64.b64decode(match.group(1), validate=True)
        if base64.b64encode(decoded).decode("ascii") != match.group(1):
            return None
        return decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def with_payload(event: SSEEvent, payload: Any) -> SSEEvent:
    """The event carrying `payload` instead, its other fields (`id:` for resumption, `event:`) kept."""
    kept = [line for line in event.raw.decode("utf-8", "replace").split("\n") if line and not line.startswith("data")]
    return SSEEvent(("\n".join([*kept, "data: " + orjson.dumps(payload).decode()]) + "\n\n").encode())

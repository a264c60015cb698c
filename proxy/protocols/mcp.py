"""MCP (JSON-RPC over streamable HTTP): errors in JSON-RPC shape.

Each JSON-RPC message is redacted whole, on its own: a log line or a progress message is a complete
text a client shows as it comes, so no part of one is ever held back into the next.

A stream's error event is a `message` event, the only kind MCP clients read, carrying a
JSON-RPC error: a client waiting on the stream's request takes it as that request's answer
(the SDK's client gives a POST stream's answer the id of the request it answers).
"""

from __future__ import annotations

from typing import Any, ClassVar

from proxy.errors import ProxyError
from proxy.protocols.base import Protocol
from proxy.protocols.sse import SSEEvent

_JSONRPC_CODES = {"invalid_request": -32600, "not_found": -32601}


class MCPProtocol(Protocol):
    name: ClassVar[str] = "mcp"

    def error_payload(self, err: ProxyError) -> dict[str, Any]:
        return {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": _JSONRPC_CODES.get(err.kind, -32000), "message": err.message},
        }

    def stream_error_event(self, err: ProxyError) -> SSEEvent:
        return SSEEvent.from_json(self.error_payload(err), event="message")

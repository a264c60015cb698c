"""MCP (JSON-RPC over streamable HTTP): errors in JSON-RPC shape, and where a stream of messages carries text.

A stream's error event is a `message` event, the only kind MCP clients read, carrying a
JSON-RPC error: a client waiting on the stream's request takes it as that request's answer
(the SDK's client gives a POST stream's answer the id of the request it answers).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from proxy.errors import ProxyError
from proxy.protocols.base import Protocol
from proxy.protocols.sse import SSEEvent
from proxy.protocols.stream_text import mcp_closes, mcp_event_slots
from proxy.protocols.text_slots import Channel, TextSlot

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

    # ---- content safety: the text of a stream of messages (proxy/protocols/stream_text.py)

    def event_text_slots(self, event: SSEEvent) -> list[TextSlot]:
        return mcp_event_slots(event.json())

    def event_closes(self, event: SSEEvent) -> tuple[Channel, ...]:
        return mcp_closes(event.json())

    def continuation_event(self, template: SSEEvent, slot: TextSlot, text: str) -> SSEEvent:
        if not slot.path:
            return super().continuation_event(template, slot, text)
        return SSEEvent.from_json(slot.set(orjson.loads(template.data or "null"), text), event=template.event)

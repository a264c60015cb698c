"""MCP (JSON-RPC over streamable HTTP): errors in JSON-RPC shape."""

from __future__ import annotations

from typing import Any, ClassVar

from proxy.errors import ProxyError
from proxy.protocols.base import Protocol

_JSONRPC_CODES = {"invalid_request": -32600, "not_found": -32601}


class MCPProtocol(Protocol):
    name: ClassVar[str] = "mcp"

    def error_payload(self, err: ProxyError) -> dict[str, Any]:
        return {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": _JSONRPC_CODES.get(err.kind, -32000), "message": err.message},
        }

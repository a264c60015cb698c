"""Protocol adapters by name, as a policy's `upstreams.*.protocol` names them."""

from __future__ import annotations

from proxy.protocols.anthropic import AnthropicProtocol
from proxy.protocols.base import Protocol, Usage
from proxy.protocols.mcp import MCPProtocol
from proxy.protocols.openai import OpenAIProtocol

PROTOCOLS: dict[str, Protocol] = {
    "openai": OpenAIProtocol(),
    "anthropic": AnthropicProtocol(),
    "http": Protocol(),
    "mcp": MCPProtocol(),
}

__all__ = ["PROTOCOLS", "AnthropicProtocol", "MCPProtocol", "OpenAIProtocol", "Protocol", "Usage"]

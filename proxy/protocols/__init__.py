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

# The protocols whose bodies carry a model, messages and usage: the ones LLM stages act on.
LLM_PROTOCOLS = frozenset(name for name, adapter in PROTOCOLS.items() if adapter.parses_json)

__all__ = ["LLM_PROTOCOLS", "PROTOCOLS", "AnthropicProtocol", "MCPProtocol", "OpenAIProtocol", "Protocol", "Usage"]

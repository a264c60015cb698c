"""Per-tool guards: bounded tool labels, a rate limit per caller and tool, a breaker per tool.

Tool names come from callers and servers, so they are never used as they are where they
would grow something: a server's first `max_tool_labels` distinct names (that look like
tool names) get their own metric label, store key and breaker; the rest share `_other`.
Rate limits go through the limits stage's machinery (proxy/limits/: the same store,
Redis or memory, and the same refusal semantics); breakers are the forwarding package's
(proxy/forward/breaker.py), kept in the process-wide endpoint registry so they survive
reloads and show in /admin/status as upstream `tool:<server>`.
"""

from __future__ import annotations

import re
import threading

from proxy.forward.breaker import BreakerSettings, CircuitBreaker
from proxy.limits.context import LimitsContext
from proxy.limits.keys import part
from proxy.limits.limiter import Decision, Limit
from proxy.services import Services
from proxy.state import Rate
from proxy.tools.config import OTHER_TOOL, ToolSettings

_TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,128}")  # the MCP specification's tool-name characters


class ToolLabels:
    """Per server, the tool names that get a label of their own: the first `limit` seen."""

    def __init__(self, limit: int):
        self._limit = limit
        self._names: dict[str, set[str]] = {}
        self._lock = threading.Lock()  # a reload compiles in a thread; requests add names on the loop

    def label(self, server: str, tool: str) -> str:
        if not _TOOL_NAME.fullmatch(tool):
            return OTHER_TOOL
        with self._lock:
            names = self._names.setdefault(server, set())
            if tool in names:
                return tool
            if len(names) >= self._limit:
                return OTHER_TOOL
            names.add(tool)
            return tool


def breaker(services: Services, server: str, tool: str, settings: ToolSettings) -> CircuitBreaker | None:
    config = settings.circuit_breaker
    if config is None:
        return None
    breaker_settings = BreakerSettings(True, config.failure_threshold, config.recovery_timeout_s)
    endpoint = services.endpoints.endpoint(f"tool:{server}", tool, breaker_settings, services.metrics, label=tool)
    return endpoint.breaker


async def admit(limits: LimitsContext, caller: str, server: str, tool: str, settings: ToolSettings) -> Decision | None:
    """None when no rate applies; else the limiter's decision for one call."""
    rpm = settings.requests_per_minute
    if rpm is None:
        return None
    key = f"{limits.prefix}t:{part(caller)}:{part(server)}:{part(tool)}:rpm"
    text = f"{rpm} calls per minute of tool '{server}:{tool}' by caller '{caller}'"
    return await limits.limiter.admit([Limit(Rate(key, rpm, 60.0, 1), "tool_requests", text, "requests")])

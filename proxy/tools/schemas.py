"""Tool input schemas as servers list them, per server, caller and session, bounded.

Filled from `tools/list` answers (every page), read by `tools/call` checks. A schema is
compiled into a validator on first use and kept. Bounds: `max_sessions` sessions (least
recently used go first, each forgotten after `schema_ttl_s`) and `max_tools_per_session`
tools each; a tool past the bound, or never listed, is not checked by the proxy (its
server still checks). Under the 2026-07-28 revision there is no session: the key's
session part is empty and the schemas are shared by that caller's calls to the server.

One cache serves every tool route with the same three bounds, and outlives a policy reload
while they stay the same (proxy/kept.py): agents list their tools once per session, so a
fresh cache would leave every session listed before the reload unchecked. It holds schemas
only; whether a caller may call a tool is decided by the serving policy at each call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache

from proxy.tools.arguments import compile_schema

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

SessionKey = tuple[str, str, str]  # (server, caller, session id)
_UNCOMPILED: Any = object()


class _Tool:
    __slots__ = ("schema", "validator")

    def __init__(self, schema: Any):
        self.schema = schema
        self.validator: Validator | None = _UNCOMPILED


class SchemaCache:
    def __init__(self, max_sessions: int, max_tools: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self._sessions: TTLCache[SessionKey, dict[str, _Tool]] = TTLCache(max_sessions, ttl_s, timer=clock)
        self._max_tools = max_tools

    def store(self, key: SessionKey, tools: list[Any]) -> None:
        """A page of a `tools/list` answer; pages add up, a tool listed again is replaced."""
        known = self._sessions.get(key)
        if known is None:
            known = {}
        for tool in tools:
            name = tool.get("name") if isinstance(tool, dict) else None
            if not isinstance(name, str) or (name not in known and len(known) >= self._max_tools):
                continue
            known[name] = _Tool(tool.get("inputSchema"))
        self._sessions[key] = known  # (re)inserted: its time to live starts again

    def validator(self, key: SessionKey, tool: str) -> tuple[bool, Validator | None]:
        """(listed, validator): a tool never listed in the session, or with an unusable schema, has none."""
        known = self._sessions.get(key)
        entry = known.get(tool) if known is not None else None
        if entry is None:
            return False, None
        if entry.validator is _UNCOMPILED:
            entry.validator = compile_schema(entry.schema)
        return True, entry.validator

    def __len__(self) -> int:
        return len(self._sessions)

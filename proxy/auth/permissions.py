"""What a caller may do: models, routes and tools from its caller profile, as compiled glob sets.

Compiled once per policy load; a check is one regex match, or nothing when `*` is listed.
Tool patterns name a tool server (`search`) or one tool of it (`files:read_*`): a route
that declares `tool: files` is reachable by a caller with any pattern for that server,
and the tool-traffic stage checks single tools with `caller_may_use_tool`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from proxy.policy.schema import CallerProfile


class Globs:
    """A set of fnmatch patterns (case-sensitive) matched as one regex."""

    __slots__ = ("_regex", "everything", "patterns")

    def __init__(self, patterns: Iterable[str]):
        self.patterns = tuple(dict.fromkeys(patterns))
        self.everything = "*" in self.patterns
        joined = "|".join(fnmatch.translate(p) for p in self.patterns)
        self._regex = re.compile(joined) if joined and not self.everything else None

    def match(self, name: str) -> bool:
        return self.everything or (self._regex is not None and self._regex.match(name) is not None)


class Permissions:
    """One caller profile's allowlists."""

    __slots__ = ("models", "routes", "tool_servers", "tools")

    def __init__(self, profile: CallerProfile):
        self.models = Globs(profile.models)
        self.routes = Globs(profile.routes)
        self.tools = Globs(profile.tools)
        self.tool_servers = Globs(pattern.split(":", 1)[0] for pattern in profile.tools)

    def may_use_model(self, model: str) -> bool:
        return self.models.match(model)

    def may_use_route(self, route: str) -> bool:
        return self.routes.match(route)

    def may_use_tool(self, tool: str) -> bool:
        return self.tools.match(tool)

    def may_reach_tool_server(self, server: str) -> bool:
        return self.tools.match(server) or self.tool_servers.match(server)


def caller_may_use_tool(profile: CallerProfile | Permissions, tool: str) -> bool:
    """Whether a caller profile allows one tool (`search`, or `server:tool`)."""
    permissions = profile if isinstance(profile, Permissions) else Permissions(profile)
    return permissions.may_use_tool(tool)

"""Judging the function calls an LLM proposes, in whole answers and in streams.

`FunctionRules` is compiled once per policy: which functions each caller profile may be
asked to call. `CallGate` follows one stream: it remembers each call's function name by
the call's key, judges a call as soon as its name (or a new piece of it) arrives, and holds
events back, in order and within bounds, while a call has parts but no name yet, so a
denied call never reaches the caller, not even its first argument bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from proxy.auth.permissions import Globs, Permissions
from proxy.protocols.sse import SSEEvent
from proxy.protocols.tool_calls import CallKey, CallPart
from proxy.tools.proposed_config import ToolCallAction, ToolCallsConfig

MAX_LOGGED_NAME = 64


class FunctionRules:
    """Which functions a caller profile may be asked to call; a check is one or two regex matches."""

    __slots__ = ("_allow", "_namespace", "_profiles")

    def __init__(self, config: ToolCallsConfig, profiles: Mapping[str, Permissions]):
        self._allow = Globs(config.allow)
        self._namespace = config.namespace
        # A profile that names the namespace alone (`fn`) allows every function; `*` does too.
        self._profiles = {
            name: (permissions, self._namespace is not None and permissions.tools.match(self._namespace))
            for name, permissions in profiles.items()
        }

    def allows(self, profile: str | None, function: str) -> bool:
        if self._allow.match(function):
            return True
        entry = self._profiles.get(profile or "default")
        if entry is None or self._namespace is None or not function:
            return False
        permissions, whole_namespace = entry
        return whole_namespace or permissions.may_use_tool(f"{self._namespace}:{function}")

    def checker(self, profile: str | None) -> Callable[[str], bool]:
        return lambda function: self.allows(profile, function)


def loggable(function: str) -> str:
    """A function name as it may appear in a log line: upstream input, so bounded and printable."""
    cut = function[:MAX_LOGGED_NAME]
    return "".join(c if c.isprintable() else "?" for c in cut) + ("..." if len(function) > MAX_LOGGED_NAME else "")


@dataclass(slots=True)
class Verdicts:
    """The calls of one answer judged not allowed, by key, and what the action made of them."""

    action: ToolCallAction
    allowed: Callable[[str], bool]
    names: dict[CallKey, str] = field(default_factory=dict)
    refused: dict[CallKey, str] = field(default_factory=dict)  # key -> name, for calls the caller may not use

    def judge(self, key: CallKey, name: str) -> bool:
        """Records the call's (latest) name; True when the answer must be denied."""
        self.names[key] = name
        if self.allowed(name):
            self.refused.pop(key, None)
            return False
        self.refused[key] = name
        return self.action == "deny"

    def decisions(self) -> list[str]:
        """One decision per call: allowed, or for a call the caller may not use unlisted, flagged or denied."""
        return [self.refused_decision if key in self.refused else "allowed" for key in self.names]

    @property
    def refused_decision(self) -> str:
        return {"deny": "denied", "flag": "flagged", "allow": "unlisted"}[self.action]


class CallGate:
    """One stream's proposed calls: events in, events out, and the first denied function's name."""

    __slots__ = ("_held", "_held_bytes", "_max_bytes", "_max_events", "_waiting", "denied", "verdicts")

    def __init__(self, verdicts: Verdicts, max_events: int, max_bytes: int):
        self.verdicts = verdicts
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._held: list[SSEEvent] = []
        self._held_bytes = 0
        self._waiting: set[CallKey] = set()  # calls with parts but no name yet
        self.denied: str | None = None

    @property
    def held(self) -> int:
        return len(self._held)

    def event(self, event: SSEEvent, parts: Iterable[CallPart]) -> list[SSEEvent]:
        """What may go to the caller now; [] while holding, and for everything once a call is denied."""
        if self.denied is not None:
            return []
        names = self.verdicts.names
        for part in parts:
            if part.name and part.piece:  # a piece of a chat call's name: the SDKs append it to the ones before
                name = names.get(part.key, "") + part.name
            elif part.name is not None and not part.piece:  # a whole name, repeated by later events
                if names.get(part.key) == part.name:
                    continue
                name = part.name
            else:
                if part.key not in names:
                    self._waiting.add(part.key)
                continue
            self._waiting.discard(part.key)
            if self.verdicts.judge(part.key, name):
                return self._deny(name)
        if not self._waiting and not self._held:
            return [event]
        self._held.append(event)
        self._held_bytes += len(event.raw)
        if self._waiting and len(self._held) <= self._max_events and self._held_bytes <= self._max_bytes:
            return []
        return self._release()

    def end(self) -> list[SSEEvent]:
        """The stream ended: calls still without a name are judged as unnamed, then what was held goes."""
        if self.denied is not None or not self._held:
            return []
        return self._release()

    def _release(self) -> list[SSEEvent]:
        for key in sorted(self._waiting, key=repr):  # past the bounds, or at the end: judged without a name
            if self.verdicts.judge(key, ""):
                return self._deny("")
        self._waiting.clear()
        out, self._held, self._held_bytes = self._held, [], 0
        return out

    def _deny(self, name: str) -> list[SSEEvent]:
        self.denied = name
        self._held, self._held_bytes = [], 0
        self._waiting.clear()
        return []

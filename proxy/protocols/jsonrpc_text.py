"""Where the text is in MCP's JSON-RPC messages, for redaction of a stream of them.

A message is a whole document, redacted whole (every string value, every number), except
the text MCP sends in pieces over several messages: a logger's `notifications/message`
data and a progress token's `notifications/progress` message. Each of those is a channel,
so a value cut across two messages is read whole; the response that ends the request
closes them all, and a progress notification that reaches its total closes its own.
"""

from __future__ import annotations

from typing import Any

from proxy.protocols.text_slots import ROOT_VALUE, Channel, Path, TextSlot

_CHANNELS = {
    "notifications/message": ("data", "log", "logger"),
    "notifications/progress": ("message", "progress", "progressToken"),
}


def _key(value: Any) -> str | int | None:
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def _text_path(message: dict[str, Any]) -> tuple[Path, Channel] | None:
    spec = _CHANNELS.get(message.get("method"))  # type: ignore[arg-type]
    params = message.get("params")
    if spec is None or not isinstance(params, dict):
        return None
    field, kind, scope = spec
    if not isinstance(params.get(field), str):
        return None
    return ("params", field), (kind, _key(params.get(scope)))


def _beside(payload: dict[str, Any], path: Path) -> list[TextSlot]:
    """Value slots for everything in `payload` except what lies on `path`."""
    slots: list[TextSlot] = []
    node: Any = payload
    for depth, key in enumerate(path):
        slots.extend(TextSlot((*path[:depth], other), "value") for other in node if other != key)
        node = node[key]
    return slots


def mcp_event_slots(payload: Any) -> list[TextSlot]:
    if payload is None:
        return []
    found = _text_path(payload) if isinstance(payload, dict) else None
    if found is None:
        return [ROOT_VALUE]
    path, channel = found
    return [*_beside(payload, path), TextSlot(path, "text", channel)]


def mcp_closes(payload: Any) -> tuple[Channel, ...]:
    if not isinstance(payload, dict):
        return ()
    if "id" in payload and ("result" in payload or "error" in payload):
        return ((),)
    params = payload.get("params")
    if payload.get("method") == "notifications/progress" and isinstance(params, dict):
        progress, total = params.get("progress"), params.get("total")
        if isinstance(progress, int | float) and isinstance(total, int | float) and progress >= total:
            return (("progress", _key(params.get("progressToken"))),)
    return ()

"""Where the text is in http tools' streams of JSON events.

An event is a whole document, redacted whole (every string value, every number), except
the text sent in pieces over several of them, which is a channel so a value cut across two
is read whole: the policy names those fields (`stages.redaction.stream_text`), one channel
per field and event name, closed at the end of the stream.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.protocols.sse import SSEEvent
from proxy.protocols.text_slots import Path, TextSlot

FieldPath = tuple[str, ...]
FIELD = "field"
"""The first element of a named field's channel: its flush event is built here, not by the adapter."""


def _around(node: dict[str, Any], prefix: Path, paths: list[Path]) -> list[TextSlot]:
    """Value slots for everything in `node` except what lies on `paths`, which lead through objects."""
    slots: list[TextSlot] = []
    for key, value in node.items():
        here = (*prefix, key)
        if here in paths:
            continue
        if isinstance(value, dict) and any(path[: len(here)] == here for path in paths):
            slots.extend(_around(value, here, paths))
        else:
            slots.append(TextSlot(here, "value"))
    return slots


def _get(payload: Any, path: FieldPath) -> Any:
    for key in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


# ---- fields a policy names (http tools)


def field_slots(payload: Any, fields: tuple[FieldPath, ...], event: str | None) -> list[TextSlot] | None:
    """The named fields that hold text as channels of the event's name, the rest whole; None if none holds text."""
    if not isinstance(payload, dict):
        return None
    present: list[Path] = [path for path in fields if isinstance(_get(payload, path), str)]
    if not present:
        return None
    return [*_around(payload, (), present), *(TextSlot(path, "text", (FIELD, event, path)) for path in present)]


def field_continuation(template: SSEEvent, slot: TextSlot, fields: tuple[FieldPath, ...], text: str) -> SSEEvent:
    """An event like the channel's last one carrying `text` in its field, and no text in the other named fields."""
    payload = orjson.loads(template.data or "null")
    for path in fields:
        if path != slot.path and isinstance(_get(payload, path), str):
            TextSlot(path).set(payload, "")
    return SSEEvent.from_json(slot.set(payload, text), event=template.event)

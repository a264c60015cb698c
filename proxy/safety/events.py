"""Redacting a stream event by event, keeping every event well-formed.

Each delta's text goes through its channel's pipeline (one per choice, tool call or
content block) and the event is re-serialised with the text the pipeline released,
which may be less than it carried, or more. When the protocol says a channel has ended
(a finish reason, a content_block_stop, `[DONE]`), what the channel still holds goes out
first, in an event of the same kind as its last delta. Events that carry whole texts
(the Responses API's `.done` events and final response) are redacted whole. On http and
MCP routes, plain-text `data:` is a channel per event name; the adapter names the JSON
text that continues across messages (MCP log and progress messages) and the policy the
fields of a tool's JSON events that do (`stream_text`); other JSON payloads are redacted
whole, event by event. A `block` hit ends the stream with the protocol's error
event; nothing after it is sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import Forbidden
from proxy.protocols.base import Protocol
from proxy.protocols.sse import SSEEvent
from proxy.protocols.stream_text import FIELD, field_continuation, field_slots
from proxy.protocols.text_slots import Channel, TextSlot
from proxy.safety.actions import Blocked
from proxy.safety.content import BIG_NUMBER, ExchangeRedaction, blocked_error
from proxy.safety.jsontext import JsonTextRedactor
from proxy.safety.stream_redactor import TextPipeline


@dataclass(slots=True)
class _Open:
    pipe: TextPipeline | JsonTextRedactor
    template: SSEEvent  # the channel's last delta event, the model for a flush event
    slot: TextSlot


def _document(value: Any) -> bool:
    """A JSON object or array: what a tool's stream sends as a document rather than as text."""
    return isinstance(value, dict | list)


def _ended(channel: Channel, closes: tuple[Channel, ...]) -> bool:
    return any(channel[: len(prefix)] == prefix for prefix in closes)


class StreamRewriter:
    __slots__ = ("_channels", "_fields", "_protocol", "_redaction", "blocked")

    def __init__(self, protocol: Protocol, redaction: ExchangeRedaction):
        self._protocol = protocol
        self._redaction = redaction
        self._channels: dict[Channel, _Open] = {}
        self._fields = () if protocol.parses_json else redaction.compiled.stream_text
        self.blocked: Forbidden | None = None

    @property
    def held(self) -> int:
        """Open channels; for tests and benchmarks."""
        return len(self._channels)

    def event(self, event: SSEEvent) -> list[SSEEvent]:
        if self.blocked is not None:
            return []
        try:
            return self._event(event)
        except Blocked as hit:
            return self._block(hit)

    def end(self) -> list[SSEEvent]:
        """The stream ended: flush every channel still open."""
        if self.blocked is not None:
            return []
        try:
            return self._flush(((),))
        except Blocked as hit:
            return self._block(hit)

    def _block(self, hit: Blocked) -> list[SSEEvent]:
        self.blocked = blocked_error(hit.detector)
        self._channels.clear()
        return [self._protocol.stream_error_event(self.blocked)]

    def _event(self, event: SSEEvent) -> list[SSEEvent]:
        protocol, redaction = self._protocol, self._redaction
        if not protocol.parses_json and event.data and (not _document(event.json()) or BIG_NUMBER.search(event.raw)):
            return [self._odd_event(event)]
        slots = protocol.event_text_slots(event)
        if self._fields and (named := field_slots(event.json(), self._fields, event.event)) is not None:
            slots = named
        closes = protocol.event_closes(event) if slots or self._channels else ()
        payload = event.json()
        changed: list[tuple[TextSlot, object]] = []
        for slot in slots:
            value = slot.get(payload)
            channel = slot.channel
            if channel is None:
                new = redaction.whole(slot.kind, value, slot.key)
            else:
                opened = self._channels.get(channel)
                if opened is None:
                    opened = self._channels[channel] = _Open(redaction.channel(slot.kind), event, slot)
                opened.template, opened.slot = event, slot
                new = opened.pipe.feed(value)
                if closes and _ended(channel, closes):
                    new += opened.pipe.flush()
                    del self._channels[channel]
            if new is not value and new != value:
                changed.append((slot, new))
        out = self._flush(closes) if closes else []
        if changed:
            fresh = orjson.loads(event.data or "null")  # a copy: the event's own parse may be shared with other stages
            for slot, new in changed:
                fresh = slot.set(fresh, new)
            event = SSEEvent.from_json(fresh, event=event.event)
        out.append(event)
        return out

    def _odd_event(self, event: SSEEvent) -> SSEEvent:
        """A tool's event orjson cannot read or keep (plain text, integers beyond 64 bits): redacted all the same."""
        data = event.data or ""
        try:
            value: Any = json.loads(data)
        except ValueError:
            value = None
        if not _document(value):  # text, or a scalar that happens to read as JSON (` 4`, `true`): text
            return self._text_event(event, data)
        new_value = self._redaction.whole("value", value)
        if new_value is value:
            return event
        return event.with_data(json.dumps(new_value, ensure_ascii=False, separators=(",", ":")))

    def _text_event(self, event: SSEEvent, data: str) -> SSEEvent:
        """Plain-text data continues the text of the events of its name before it, as a delta does its channel's:
        a value cut across events is read whole, and held text goes out with a later event or at the end."""
        slot = self._protocol.data_text_slot(event)
        channel = slot.channel
        assert channel is not None
        opened = self._channels.get(channel)
        if opened is None:
            opened = self._channels[channel] = _Open(self._redaction.channel("text"), event, slot)
        opened.template = event
        new = opened.pipe.feed(data)
        return event if new == data else event.with_data(new)

    def _flush(self, closes: tuple[Channel, ...]) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        for channel in [c for c in self._channels if _ended(c, closes)]:
            opened = self._channels.pop(channel)
            rest = opened.pipe.flush()
            if not rest:
                continue
            if channel and channel[0] == FIELD:  # a field the policy names: the event's JSON is the tool's own
                out.append(field_continuation(opened.template, opened.slot, self._fields, rest))
            else:
                out.append(self._protocol.continuation_event(opened.template, opened.slot, rest))
        return out

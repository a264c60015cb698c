"""Redacting a stream event by event, keeping every event well-formed.

Each delta's text goes through its channel's pipeline (one per choice, tool call or
content block). On LLM routes an event whose text the pipeline has not released yet is held
whole (held_events.py) and goes out as the upstream sent it once later text shows nothing in
it is masked; only an event a mask overlaps, or one forced out by the bounds
(`stream_hold_events`, `stream_hold_bytes`) or by being the stream's first, is re-serialised,
with the text released for it, which may be less than it carried, or more. Order is kept:
events without text wait behind a held one. When the protocol says a channel has ended
(a finish reason, a content_block_stop, `[DONE]`), what the channel still holds goes out
with its last event, or before the ending event in an event of the same kind as its last
delta. Events that carry whole texts
(the Responses API's `.done` events and final response) are redacted whole. On http and
MCP routes, plain-text `data:` is a channel per event name; the adapter names the JSON
text that continues across messages (MCP log and progress messages) and the policy the
fields of a tool's JSON events that do (`stream_text`); other JSON payloads are redacted
whole, event by event. A `block` hit ends the stream with the protocol's error
event; nothing after it is sent. The usual delta of an LLM stream, once one has been parsed,
is read from its bytes without a parse (event_shape.py).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.errors import Forbidden
from proxy.protocols.base import Protocol
from proxy.protocols.sse import SSEEvent
from proxy.protocols.stream_text import FIELD, field_continuation, field_slots
from proxy.protocols.text_slots import Channel, TextSlot
from proxy.safety.actions import Blocked
from proxy.safety.content import BIG_NUMBER, ExchangeRedaction, blocked_error
from proxy.safety.event_shape import LEARNS, EventShape, learn
from proxy.safety.held_events import Entry, Lane
from proxy.safety.jsontext import JsonTextRedactor
from proxy.safety.stream_redactor import TextPipeline


@dataclass(slots=True)
class _Open:
    pipe: TextPipeline | JsonTextRedactor
    template: SSEEvent  # the channel's last delta event, the model for a flush event
    slot: TextSlot
    lane: Lane
    feed: Callable[[str], str]  # the pipe's


def _open(pipe: TextPipeline | JsonTextRedactor, event: SSEEvent, slot: TextSlot) -> _Open:
    """A channel; its lane can find its place again after a mask where the redactor says what it holds."""
    if isinstance(pipe, TextPipeline):
        return _Open(pipe, event, slot, Lane(lambda: pipe.pending), pipe.feeder)
    return _Open(pipe, event, slot, Lane(None), pipe.feed)


def _document(value: Any) -> bool:
    """A JSON object or array: what a tool's stream sends as a document rather than as text."""
    return isinstance(value, dict | list)


def _ended(channel: Channel, closes: tuple[Channel, ...]) -> bool:
    return any(channel[: len(prefix)] == prefix for prefix in closes)


class StreamRewriter:
    __slots__ = (
        "_channels", "_fields", "_hold_bytes", "_hold_events", "_learns", "_protocol", "_queue", "_queued_bytes",
        "_redaction", "_sent", "_shape", "blocked",
    )  # fmt: skip

    def __init__(self, protocol: Protocol, redaction: ExchangeRedaction):
        self._protocol = protocol
        self._redaction = redaction
        self._channels: dict[Channel, _Open] = {}
        self._fields = () if protocol.parses_json else redaction.compiled.stream_text
        # Tool streams (http, MCP) are not held: their events are documents, rewritten as they come.
        compiled = redaction.compiled
        self._hold_events = compiled.hold_events if protocol.parses_json else 0
        self._hold_bytes = compiled.hold_bytes
        self._queue: deque[Entry] = deque()
        self._queued_bytes = 0
        self._sent = False  # the first event is never held, so the first byte does not wait
        self._shape: EventShape | None = None  # the usual delta's bytes around its text (event_shape.py)
        self._learns = LEARNS if protocol.parses_json else 0
        self.blocked: Forbidden | None = None

    @property
    def held(self) -> int:
        """Open channels; for tests and benchmarks."""
        return len(self._channels)

    @property
    def queued(self) -> int:
        """Events held back now; for tests and benchmarks."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def kept_chars(self) -> int:
        """Characters of text the open channels' lanes keep to follow them (not their redactors'); for tests."""
        return sum(len(opened.lane.unsent) + len(opened.lane.ready) for opened in self._channels.values())

    def event(self, event: SSEEvent) -> list[SSEEvent]:
        if self.blocked is not None:
            return []
        try:
            direct = self._event(event)
        except Blocked as hit:
            return self._block(hit)
        if direct is not None:
            self._sent = True
            return [direct]
        return self._release()

    def end(self) -> list[SSEEvent]:
        """The stream ended: flush every channel still open, and every event held."""
        if self.blocked is not None:
            return []
        try:
            self._close(((),))
        except Blocked as hit:
            return self._block(hit)
        return self._release(everything=True)

    def _block(self, hit: Blocked) -> list[SSEEvent]:
        """What was released before the hit still goes out (events held carry only that), then the error."""
        self.blocked = blocked_error(hit.detector)
        out = self._release(everything=True)
        self._channels.clear()
        return [*out, self._protocol.stream_error_event(self.blocked)]

    def _event(self, event: SSEEvent) -> SSEEvent | None:
        """Queues the event, or returns it when it can go out at once, as it is, with nothing held before it."""
        shape = self._shape
        if shape is not None and (value := shape.text(event.raw)) is not None:
            opened = self._channels.get(shape.slot.channel)
            if opened is not None:
                return self._delta(event, opened, shape.slot, value)
        protocol, redaction = self._protocol, self._redaction
        if not protocol.parses_json and event.data and (not _document(event.json()) or BIG_NUMBER.search(event.raw)):
            self._push(Entry(self._odd_event(event)))
            return None
        slots = protocol.event_text_slots(event)
        if self._fields and (named := field_slots(event.json(), self._fields, event.event)) is not None:
            slots = named
        closes = protocol.event_closes(event) if slots or self._channels else ()
        payload = event.json()
        if not self._queue and not closes and len(slots) == 1 and (channel := slots[0].channel) is not None:
            opened = self._channels.get(channel)
            if opened is not None:  # the usual delta: one channel's text, nothing waiting
                slot = slots[0]
                value = slot.get(payload)
                if self._learns:  # no shape yet, or this event has not the one learned
                    self._learns -= 1
                    self._shape = learn(protocol, event, slot, value) or shape
                return self._delta(event, opened, slot, value)
        entry = Entry(event)
        for slot in slots:
            value = slot.get(payload)
            channel = slot.channel
            if channel is None:
                new = redaction.whole(slot.kind, value, slot.key)
                if new is not value and new != value:
                    entry.whole = [*(entry.whole or ()), (slot, new)]
                continue
            opened = self._channels.get(channel)
            if opened is None:
                opened = self._channels[channel] = _open(redaction.channel(slot.kind), event, slot)
            opened.template, opened.slot = event, slot
            opened.lane.add(entry, slot, value, opened.feed(value))
        if closes:
            self._close(closes)
        self._push(entry)
        return None

    def _delta(self, event: SSEEvent, opened: _Open, slot: TextSlot, value: str) -> SSEEvent | None:
        """One channel's text, the event's only slot, closing nothing: out at once as it is when nothing waits and
        the text is released as it came, else held."""
        opened.template, opened.slot = event, slot
        released = opened.feed(value)
        queue = self._queue
        if not queue and opened.lane.direct(value, released):
            return event
        entry = Entry(event)
        opened.lane.add(entry, slot, value, released)
        queue.append(entry)
        self._queued_bytes += len(event.raw)
        return None

    def _push(self, entry: Entry) -> None:
        self._queue.append(entry)
        self._queued_bytes += len(entry.event.raw)

    def _close(self, closes: tuple[Channel, ...]) -> None:
        """Channels that end before the event now coming: what each holds goes with its last piece, or, if that
        went out already, in an event of the same kind as its last delta."""
        for channel in [c for c in self._channels if _ended(c, closes)]:
            opened = self._channels.pop(channel)
            lane = opened.lane
            lane.ready += opened.pipe.flush()
            lane.settle(final=True)
            if not lane.ready:
                continue
            if channel and channel[0] == FIELD:  # a field the policy names: the event's JSON is the tool's own
                flushed = field_continuation(opened.template, opened.slot, self._fields, lane.ready)
            else:
                flushed = self._protocol.continuation_event(opened.template, opened.slot, lane.ready)
            self._push(Entry(flushed))

    def _release(self, everything: bool = False) -> list[SSEEvent]:
        """The events at the front that are decided; one still undecided is forced out when the stream has sent
        nothing yet or the held events pass their bounds."""
        queue, out = self._queue, []
        while queue:
            entry = queue[0]
            raw = entry.whole is None
            for piece in entry.pieces:
                new = piece.new
                if new is None:
                    if not (
                        everything
                        or not self._sent
                        or len(queue) > self._hold_events
                        or self._queued_bytes > self._hold_bytes
                    ):
                        return out
                    for rest in entry.pieces:
                        if rest.new is None:
                            rest.lane.force()
                    raw = False
                    break
                if new is not piece.value:
                    raw = False
            queue.popleft()
            self._queued_bytes -= len(entry.event.raw)
            out.append(entry.event if raw else entry.built())
            self._sent = True
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
            opened = self._channels[channel] = _open(self._redaction.channel("text"), event, slot)
        opened.template = event
        new = opened.feed(data)
        return event if new == data else event.with_data(new)

"""Reading a stream's usual delta from its bytes, without parsing it: the last one's shape with other text.

Within one stream the usual deltas differ only in their text: the same id, model, choice or
block index, field order and spacing. Once such an event has been parsed and its one text
slot found, its bytes are split around that text's string literal into a `head` and a
`tail`. A later event made of the same head and tail, whose bytes between them hold no
quote, backslash or control character (so they are the whole literal, unescaped, and the
JSON around it reads exactly as before), parses to the same payload but for that text: the
same slot, no channel closed, and the text is those bytes decoded. Such an event is neither
parsed nor walked; any other takes the usual way.

Where the literal is, is checked once, when the shape is learned: a probe with other text in
the literal must read back that text at the slot, and give the adapter's same slots and no
closes. The shortcut relies on the adapters telling slots and closes from a payload's
structure and the type of its texts, never from a text's value (text_slots.py).
"""

from __future__ import annotations

import re

from proxy.protocols.base import Protocol
from proxy.protocols.sse import SSEEvent
from proxy.protocols.text_slots import TextSlot

_ESCAPED = re.compile(rb'["\\\x00-\x1f]')
"""What a JSON string literal holds only escaped or at its end: absent, the bytes are the literal's whole text."""
LEARNS = 3
"""Shapes a stream learns at most: a stream whose deltas differ in more than their text (a varying field) stops
trying after that many, so it pays the probe's parse a bounded number of times."""


class EventShape:
    __slots__ = ("_end", "_head", "_start", "_tail", "slot")

    def __init__(self, head: bytes, tail: bytes, slot: TextSlot):
        self._head = head
        self._tail = tail
        self._start = len(head)
        self._end = len(head) + len(tail)  # the shortest event of the shape: the empty text
        self.slot = slot

    def text(self, raw: bytes) -> str | None:
        """The text an event of this shape carries in the slot; None when the event has not this shape."""
        if len(raw) < self._end or not raw.startswith(self._head) or not raw.endswith(self._tail):
            return None
        end = len(raw) - len(self._tail)
        if _ESCAPED.search(raw, self._start, end) is not None:
            return None
        try:
            return raw[self._start : end].decode()
        except UnicodeDecodeError:  # orjson would refuse it: the event takes the usual way, and is read as before
            return None


def learn(protocol: Protocol, event: SSEEvent, slot: TextSlot, text: str) -> EventShape | None:
    """The shape of `event`, a delta whose one text slot is `slot`, carrying `text` and closing nothing; None
    when its literal cannot be found for certain (escaped, empty, or its bytes appear twice)."""
    if not text:
        return None
    try:
        encoded = text.encode()
    except UnicodeEncodeError:
        return None
    if _ESCAPED.search(encoded) is not None:
        return None
    raw, literal = event.raw, b'"' + encoded + b'"'
    at = raw.find(literal)
    if at < 0 or raw.find(literal, at + 1) >= 0:
        return None
    head, tail = raw[: at + 1], raw[at + 1 + len(encoded) :]
    probe = SSEEvent(head + b"#" + encoded + tail)
    if protocol.event_text_slots(probe) != [slot] or protocol.event_closes(probe) != ():
        return None
    payload = probe.json()
    if slot.get(payload) != "#" + text:  # the literal found is another string's: no shape
        return None
    return EventShape(head, tail, slot)

"""Holding whole stream events back, so that an event whose text needs no mask goes out as its own bytes.

A channel's redactor keeps back the tail of the text that could still start a match (in
prose, the last word). Rather than re-serialise every event with less text in it and move
the tail into the next one, the event itself waits: each channel slot of an event is a
`Piece` of its channel's text, decided once the redactor has released the text up to the
piece's end. If what was released there is the piece's own text, the event leaves as the
upstream sent it; only a piece a mask overlaps, or one forced out early, carries other text
(and its event is rebuilt). Forced out: when the held events pass their bound (count or
bytes), or when the stream has sent nothing yet, so the first byte never waits; a forced
piece carries what was released, and the rest of its text goes with a later piece, as every
piece did before events were held.

A `Lane` follows one channel's text in three positions: `fed` (all its pieces' text),
`carried` (text that decided pieces carry) and the redactor's release, `ready` being what is
released and not carried yet. While the released text is the channel's own text (no hit, no
re-encoding), a piece takes exactly its share. When it differs (a mask), the piece at the
front takes all that was released and the lane finds its place again from what the redactor
still holds (`pending`); where that is unknown (JSON text), every later piece takes what was
released when it came, as before. Whatever the pieces carry, their concatenation is the
released text, so the caller reads exactly the redacted text. A lane keeps the channel's text
from `carried` on (`unsent`) only while in step; out of step, only as much as the redactor
holds (or none, for JSON text), so what it keeps stays bounded however long the stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from proxy.protocols.sse import SSEEvent
from proxy.protocols.text_slots import TextSlot

Replaced = tuple[TextSlot, Any]


class Entry:
    """One held event, or an event built by the rewriter (a channel's flush), which is decided from the start."""

    __slots__ = ("event", "pieces", "whole")

    def __init__(self, event: SSEEvent):
        self.event = event
        self.pieces: list[Piece] = []
        self.whole: list[Replaced] | None = None  # slots redacted whole that changed

    def built(self) -> SSEEvent:
        """The event as the upstream sent it, or rebuilt where a slot goes out with other text."""
        event = self.event
        changed = [(piece.slot, piece.new) for piece in self.pieces if piece.new is not piece.value]
        if self.whole:
            changed += self.whole
        elif not changed:
            return event
        fresh = _own_paths(event.json(), [slot for slot, _ in changed])
        for slot, new in changed:
            fresh = slot.set(fresh, new)
        return SSEEvent.from_json(fresh, event=event.event)


def _own_paths(payload: Any, slots: list[TextSlot]) -> Any:
    """`payload` with the containers on the slots' paths copied, so that setting the slots changes no one else's
    parse (the event's own is shared with other stages); the rest is shared, as a continuation event shares its
    template's values. Parsing the event again would copy all its text: megabytes, for a huge event."""
    if not isinstance(payload, dict | list):
        return payload
    root = payload.copy()
    own = {id(root)}
    for slot in slots:
        target = root
        for key in slot.path[:-1]:
            child = target[key]
            if id(child) not in own:
                child = target[key] = child.copy()
                own.add(id(child))
            target = child
    return root


class Piece:
    __slots__ = ("end", "lane", "new", "slot", "value")

    def __init__(self, lane: Lane, slot: TextSlot, value: str, end: int):
        self.lane = lane
        self.slot = slot
        self.value = value  # the text the event carries for its channel
        self.end = end  # where that text ends in the channel's text
        self.new: str | None = None  # the text it goes out with; None while undecided


class Lane:
    __slots__ = ("_pending", "carried", "fed", "pieces", "ready", "synced", "unsent")

    def __init__(self, pending: Callable[[], int] | None) -> None:
        self._pending = pending  # characters of the channel's text its redactor holds, if it can say
        self.fed = 0
        self.carried = 0
        self.unsent = ""  # the channel's text from `carried` on
        self.ready = ""  # released, not carried yet
        self.synced = True  # `carried` is known: pieces can take their own share
        self.pieces: deque[Piece] = deque()  # undecided, in order

    def direct(self, value: str, released: str) -> bool:
        """An event that can go out at once as it is: nothing of this channel waits, and what the redactor
        released now (with what it released before) is the event's very text. Nothing changes otherwise."""
        ready = self.ready
        if self.pieces or (ready + released if ready else released) != value:
            return False
        size = len(value)
        self.fed += size
        self.carried += size
        if self.unsent:  # (nothing kept stays nothing)
            self.unsent = (self.unsent + value)[size:]
        self.ready = ""
        return True

    def add(self, entry: Entry, slot: TextSlot, value: str, released: str) -> None:
        """A piece of `entry` carrying `value`, fed to the redactor, which released `released`; then settle."""
        self.fed += len(value)
        piece = Piece(self, slot, value, self.fed)
        entry.pieces.append(piece)
        self.pieces.append(piece)
        if self.synced:
            self.unsent += value
        elif self._pending is not None:  # out of step: only what the redactor holds can put it back in step
            keep = self._pending()
            self.unsent = (self.unsent + value)[-keep:] if keep else ""
        self.ready += released
        self.settle()

    def settle(self, final: bool = False) -> None:
        """Decides the pieces the released text allows; `final`: the redactor was flushed, and the last piece
        takes what is left."""
        pieces = self.pieces
        while pieces:
            ready, unsent = self.ready, self.unsent
            if not self.synced or (final and len(pieces) == 1):
                self._take(ready, len(ready) if self.synced and ready == unsent else None)
                continue
            piece = pieces[0]
            need = piece.end - self.carried
            if need <= 0:  # its text went out with a piece before it
                self._take("", 0)
            elif len(ready) >= need:
                value = piece.value
                if need == len(value) and ready.startswith(value):  # the usual case: its own text, all of it
                    new = value
                elif (new := ready[:need]) != unsent[:need]:  # a mask (or re-encoded text) in its share
                    self._take(ready, None)
                    continue
                pieces.popleft()
                piece.new = value if new == value else new
                self.ready = ready[need:]
                self.unsent = unsent[need:]
                self.carried += need
            elif unsent.startswith(ready):
                return  # its tail is still held: it waits
            else:
                self._take(ready, None)

    def force(self) -> None:
        """The front piece goes out now with what is released (its event is due)."""
        ready = self.ready
        self._take(ready, len(ready) if self.synced and self.unsent.startswith(ready) else None)

    def _take(self, text: str, consumed: int | None) -> None:
        """The front piece carries `text`, from the front of `ready`: `consumed` characters of the channel's own
        text, or None when `text` is not the channel's text (the place is then found again from `pending`)."""
        piece = self.pieces.popleft()
        piece.new = piece.value if text == piece.value else text
        self.ready = self.ready[len(text) :]
        if consumed is not None:
            self.carried += consumed
            self.unsent = self.unsent[consumed:]
        elif self._pending is not None and (pending := self._pending()) <= len(self.unsent) and not self.ready:
            self.carried = self.fed - pending
            self.unsent = self.unsent[len(self.unsent) - pending :]
            self.synced = True
        else:
            self.synced = False
            if self._pending is None:  # never back in step: its text is not needed any more
                self.unsent = ""

"""Incremental Server-Sent Events framing.

The decoder cuts a byte stream into whole events without parsing them: an event is
kept as its raw bytes, so a stream that no stage rewrites goes out exactly as it came
in. Fields (`event:`, `data:`) and the JSON payload are parsed only when a stage asks.
Line endings are normalised to LF, which the SSE grammar allows.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import UpstreamLimitExceeded

_UNSET: Any = object()


class SSEEvent:
    """One SSE event; `raw` ends with the blank line that terminates it."""

    __slots__ = ("_data", "_event", "_json", "raw")

    def __init__(self, raw: bytes):
        self.raw = raw
        self._event: str | None = _UNSET
        self._data: str | None = _UNSET
        self._json: Any = _UNSET

    @classmethod
    def build(cls, data: bytes | str, event: str | None = None) -> SSEEvent:
        """An event from a payload; multi-line data becomes several `data:` lines."""
        text = data.decode() if isinstance(data, bytes) else data
        lines = [f"event: {event}"] if event else []
        lines.extend(f"data: {line}" for line in text.split("\n"))
        return cls(("\n".join(lines) + "\n\n").encode())

    @classmethod
    def from_json(cls, payload: Any, event: str | None = None) -> SSEEvent:
        """`build` for a payload: orjson writes no newline (it escapes them in strings), so one `data:` line,
        framed without splitting the text again (a rewritten stream does this once per event)."""
        head = f"event: {event}\n".encode() if event else b""
        built = cls(b"".join((head, b"data: ", orjson.dumps(payload), b"\n\n")))  # one copy of the payload, not two
        built._json = payload
        return built

    def with_data(self, data: str) -> SSEEvent:
        """This event carrying `data` instead: its other lines (event, id, retry, comments) stay as they were."""
        lines: list[str] = []
        placed = False
        for line in self.raw.decode("utf-8", "replace").rstrip("\n").split("\n"):
            if line == "data" or line.startswith("data:"):
                if not placed:
                    lines.extend(f"data: {part}" for part in data.split("\n"))
                    placed = True
                continue
            lines.append(line)
        if not placed:
            lines.extend(f"data: {part}" for part in data.split("\n"))
        return SSEEvent(("\n".join(lines) + "\n\n").encode())

    def _one_data_line(self) -> bool:
        """`data: X` and the blank line, nothing else: how most LLM chunks come, read without splitting lines."""
        raw = self.raw
        return raw.startswith(b"data: ") and raw.find(b"\n") == len(raw) - 2

    def _parse(self) -> None:
        if self._one_data_line():
            self._event, self._data = None, self.raw[6:-2].decode("utf-8", "replace")
            return
        event: str | None = None
        data: list[str] = []
        for line in self.raw.decode("utf-8", "replace").split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
        self._event = event
        self._data = "\n".join(data) if data else None

    @property
    def event(self) -> str | None:
        if self._event is _UNSET:
            if self._data is _UNSET and self._one_data_line():
                self._event = None  # without decoding the data (megabytes, for a huge event)
            else:
                self._parse()
        return self._event

    @property
    def data(self) -> str | None:
        if self._data is _UNSET:
            self._parse()
        return self._data

    def json(self) -> Any:
        """The data parsed as JSON; None for `[DONE]`, comments or non-JSON payloads."""
        if self._json is _UNSET:
            if self._data is _UNSET and self.raw.startswith(b"data: {") and self._one_data_line():
                try:  # straight from the bytes; text that is not UTF-8 takes the long way (replaced, as `data` is)
                    self._json = orjson.loads(memoryview(self.raw)[6:-2])
                    return self._json
                except orjson.JSONDecodeError:
                    pass
            data = self.data
            try:
                self._json = orjson.loads(data) if data and data != "[DONE]" else None
            except orjson.JSONDecodeError:
                self._json = None
        return self._json

    def __repr__(self) -> str:
        return f"SSEEvent({self.raw!r})"


class SSEDecoder:
    """Feed bytes, get whole events; `flush()` returns a trailing event without its blank line.

    Linear in the bytes fed, however they are cut: each byte is searched once, and the pieces of
    an event still open are joined once, when it ends. An event may hold `max_event_bytes` at most.
    """

    __slots__ = ("_after_cr", "_held", "_max", "_parts", "_rest")

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._parts: list[bytes] = []  # an event still open: no blank line inside, nor across two parts
        self._held = 0
        self._rest = b""  # whole events not yet handed out (`feed(..., limit=)`), not yet searched
        self._after_cr = False  # the last chunk ended with CR: a LF opening the next one completes that CRLF
        self._max = max_event_bytes

    # `raw.find(x) >= 0`, not `x in raw`: on bytes, `in` first tries x as an int (a TypeError built and cleared).
    def feed(self, chunk: bytes, limit: int | None = None) -> list[SSEEvent]:
        """The events completed so far, at most `limit` of them: the rest stay buffered for the next call."""
        if chunk:
            if self._after_cr and chunk.startswith(b"\n"):
                chunk = chunk[1:]
            self._after_cr = chunk.endswith(b"\r")
            if chunk.find(b"\r") >= 0:
                # A CR is a whole line ending at once, so an event ended by CR CR goes out without waiting for more.
                chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        data = self._rest + chunk if self._rest else chunk
        self._rest = b""
        events: list[SSEEvent] = []
        start = 0
        if self._parts and data:
            if self._parts[-1].endswith(b"\n") and data.startswith(b"\n"):  # the blank line spans two chunks
                end = 0
            elif (end := data.find(b"\n\n")) == -1:
                self._hold(data)
                return events
            else:
                end += 1
            self._parts.append(data[: end + 1])
            events.append(SSEEvent(b"".join(self._parts)))
            self._parts.clear()
            self._held = 0
            start = end + 1
        while (limit is None or len(events) < limit) and (end := data.find(b"\n\n", start)) != -1:
            events.append(SSEEvent(data[start : end + 2]))
            start = end + 2
        if limit is not None and len(events) >= limit:
            self._rest = data[start:]
        elif start < len(data):
            self._hold(data[start:] if start else data)
        return events

    def _hold(self, piece: bytes) -> None:
        self._parts.append(piece)
        self._held += len(piece)
        if self._max is not None and self._held > self._max:
            self._parts.clear()
            self._held = 0
            raise UpstreamLimitExceeded(
                f"an event of the upstream's stream is larger than {self._max} bytes", code="upstream_event_too_large"
            )

    def flush(self) -> list[SSEEvent]:
        """What is left when the stream ends; an incomplete event is still returned."""
        events = self.feed(b"")
        rest = b"".join(self._parts)
        self._parts.clear()
        self._held = 0
        self._after_cr = False
        if rest.strip(b"\n"):
            events.append(SSEEvent(rest.rstrip(b"\n") + b"\n\n"))
        return events

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished event are held."""
        return bool(self._rest.strip(b"\n")) or any(part.strip(b"\n") for part in self._parts)


def encode(events: list[SSEEvent]) -> bytes:
    return b"".join(event.raw for event in events)

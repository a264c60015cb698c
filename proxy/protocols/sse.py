"""Incremental Server-Sent Events framing.

The decoder cuts a byte stream into whole events without parsing them: an event is
kept as its raw bytes, so a stream that no stage rewrites goes out exactly as it came
in. Fields (`event:`, `data:`) and the JSON payload are parsed only when a stage asks.
Line endings are normalised to LF, which the SSE grammar allows.
"""

from __future__ import annotations

from typing import Any

import orjson

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
        built = cls.build(orjson.dumps(payload), event)
        built._json = payload
        return built

    def _parse(self) -> None:
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
            data = self.data
            try:
                self._json = orjson.loads(data) if data and data != "[DONE]" else None
            except orjson.JSONDecodeError:
                self._json = None
        return self._json

    def __repr__(self) -> str:
        return f"SSEEvent({self.raw!r})"


class SSEDecoder:
    """Feed bytes, get whole events; `flush()` returns a trailing event without its blank line."""

    __slots__ = ("_after_cr", "_buffer")

    def __init__(self) -> None:
        self._buffer = b""
        self._after_cr = False  # the last chunk ended with CR: a LF opening the next one completes that CRLF

    def feed(self, chunk: bytes, limit: int | None = None) -> list[SSEEvent]:
        """The events completed so far, at most `limit` of them: the rest stay buffered for the next call."""
        if chunk:
            if self._after_cr and chunk.startswith(b"\n"):
                chunk = chunk[1:]
            self._after_cr = chunk.endswith(b"\r")
            if b"\r" in chunk:
                # A CR is a whole line ending at once, so an event ended by CR CR goes out without waiting for more.
                chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        elif not self._buffer:
            return []
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[SSEEvent] = []
        start = 0
        while (end := buffer.find(b"\n\n", start)) != -1:
            events.append(SSEEvent(buffer[start : end + 2]))
            start = end + 2
            if limit is not None and len(events) >= limit:
                break
        self._buffer = buffer[start:] if start else buffer
        return events

    def flush(self) -> list[SSEEvent]:
        """What is left when the stream ends; an incomplete event is still returned."""
        rest = self._buffer
        self._buffer = b""
        self._after_cr = False
        if not rest.strip(b"\n"):
            return []
        return [SSEEvent(rest.rstrip(b"\n") + b"\n\n")]

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished event are held."""
        return bool(self._buffer.strip(b"\n"))


def encode(events: list[SSEEvent]) -> bytes:
    return b"".join(event.raw for event in events)

"""What a stage may ask of a wire format, without speaking it.

A `Protocol` reads the model, the messages, the text of a streamed delta and the
usage from requests, bodies and events, and builds errors in its own shape. Adding a
provider means adding one adapter; stages stay format-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import orjson

from proxy.errors import ProxyError
from proxy.protocols.sse import SSEEvent


@dataclass(slots=True)
class Usage:
    """Token counts by kind; None means the upstream did not say."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None

    def update(self, other: Usage) -> None:
        """Later reports win field by field (Anthropic sends input first, output last)."""
        for field in fields(self):
            value = getattr(other, field.name)
            if value is not None:
                setattr(self, field.name, value)

    @property
    def known(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Protocol:
    """Pass-through defaults: a plain HTTP body has no model, messages or usage."""

    name: ClassVar[str] = "http"
    parses_json: ClassVar[bool] = False
    """Whether request bodies on this protocol are JSON the proxy parses and checks."""

    def error_payload(self, err: ProxyError) -> dict[str, Any]:
        return {"error": {"message": err.message, "type": err.kind, "code": err.code}}

    def error_body(self, err: ProxyError) -> bytes:
        return orjson.dumps(self.error_payload(err))

    def stream_error_event(self, err: ProxyError) -> SSEEvent:
        """How a stream ends when the upstream fails after the first byte went out."""
        return SSEEvent.from_json(self.error_payload(err), event="error")

    def request_model(self, body: Any) -> str | None:
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None

    def request_messages(self, body: Any) -> list[dict[str, Any]]:
        return []

    def is_stream_request(self, body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def response_model(self, body: Any) -> str | None:
        return self.request_model(body)

    def body_text(self, body: Any) -> str:
        """The assistant text of a whole (non-streamed) response body."""
        return ""

    def event_text(self, event: SSEEvent) -> str | None:
        """The assistant text carried by one streamed event, if any."""
        return None

    def body_usage(self, body: Any) -> Usage | None:
        return None

    def event_usage(self, event: SSEEvent) -> Usage | None:
        return None

    def is_terminal_event(self, event: SSEEvent) -> bool:
        """True for the event that ends a successful stream."""
        return False

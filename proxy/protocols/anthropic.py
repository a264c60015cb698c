"""Anthropic wire format: messages, streamed as typed events."""

from __future__ import annotations

from typing import Any, ClassVar

from proxy.errors import ProxyError
from proxy.protocols.base import Protocol, Usage, _int
from proxy.protocols.sse import SSEEvent

_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "upstream": "api_error",
    "timeout": "timeout_error",
    "unavailable": "overloaded_error",
    "internal": "api_error",
}


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        input_tokens=_int(raw.get("input_tokens")),
        output_tokens=_int(raw.get("output_tokens")),
        cached_input_tokens=_int(raw.get("cache_read_input_tokens")),
        cache_write_tokens=_int(raw.get("cache_creation_input_tokens")),
    )


class AnthropicProtocol(Protocol):
    name: ClassVar[str] = "anthropic"
    parses_json: ClassVar[bool] = True

    def error_payload(self, err: ProxyError) -> dict[str, Any]:
        return {"type": "error", "error": {"type": _ERROR_TYPES.get(err.kind, "api_error"), "message": err.message}}

    def request_messages(self, body: Any) -> list[dict[str, Any]]:
        messages = body.get("messages") if isinstance(body, dict) else None
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    def system_prompt(self, body: Any) -> str | list[Any] | None:
        return body.get("system") if isinstance(body, dict) else None

    def body_text(self, body: Any) -> str:
        if not isinstance(body, dict):
            return ""
        return "".join(
            block["text"]
            for block in body.get("content") or ()
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
        )

    def event_text(self, event: SSEEvent) -> str | None:
        if event.event != "content_block_delta":
            return None
        payload = event.json()
        delta = payload.get("delta") if isinstance(payload, dict) else None
        if isinstance(delta, dict) and delta.get("type") == "text_delta":
            text = delta.get("text")
            return text if isinstance(text, str) else None
        return None

    def body_usage(self, body: Any) -> Usage | None:
        return _usage(body.get("usage")) if isinstance(body, dict) else None

    def event_usage(self, event: SSEEvent) -> Usage | None:
        if event.event == "message_start":
            payload = event.json()
            message = payload.get("message") if isinstance(payload, dict) else None
            return _usage(message.get("usage")) if isinstance(message, dict) else None
        if event.event == "message_delta":
            payload = event.json()
            return _usage(payload.get("usage")) if isinstance(payload, dict) else None
        return None

    def is_terminal_event(self, event: SSEEvent) -> bool:
        return event.event == "message_stop"

    def event_model(self, event: SSEEvent) -> str | None:
        if event.event != "message_start":
            return None
        payload = event.json()
        message = payload.get("message") if isinstance(payload, dict) else None
        model = message.get("model") if isinstance(message, dict) else None
        return model if isinstance(model, str) else None

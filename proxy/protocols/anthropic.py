"""Anthropic wire format: messages, streamed as typed events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import orjson

from proxy.errors import ProxyError
from proxy.protocols import cached, plain, prompt_size, text_slots, tool_calls
from proxy.protocols.base import Protocol, Usage, reported_counts
from proxy.protocols.conversation import Conversation, anthropic_messages
from proxy.protocols.shape import anthropic_shape_problem
from proxy.protocols.sse import SSEEvent
from proxy.protocols.text_slots import Channel, TextSlot
from proxy.protocols.tool_calls import CallPart

_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "insufficient_quota": "rate_limit_error",
    "upstream": "api_error",
    "upstream_protocol": "api_error",
    "upstream_limit": "api_error",
    "timeout": "timeout_error",
    "unavailable": "overloaded_error",
    "internal": "api_error",
}


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return reported_counts(
        raw.get("input_tokens"),
        raw.get("output_tokens"),
        raw.get("cache_read_input_tokens"),
        raw.get("cache_creation_input_tokens"),
        None,  # reasoning_tokens: not in Anthropic's usage
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

    # `raw.find(x) >= 0`, not `x in raw`: on bytes, `in` first tries x as an int (a TypeError built and cleared).
    def event_usage(self, event: SSEEvent) -> Usage | None:
        raw = event.raw  # the bytes first: most events are text deltas, not worth parsing here
        if raw.find(b"message_start") < 0 and raw.find(b"message_delta") < 0:
            return None
        if event.event == "message_start":
            payload = event.json()
            message = payload.get("message") if isinstance(payload, dict) else None
            return _usage(message.get("usage")) if isinstance(message, dict) else None
        if event.event == "message_delta":
            payload = event.json()
            return _usage(payload.get("usage")) if isinstance(payload, dict) else None
        return None

    def is_terminal_event(self, event: SSEEvent) -> bool:
        return event.raw.find(b"message_stop") >= 0 and event.event == "message_stop"

    def event_model(self, event: SSEEvent) -> str | None:
        if event.raw.find(b"message_start") < 0 or event.event != "message_start":
            return None
        payload = event.json()
        message = payload.get("message") if isinstance(payload, dict) else None
        model = message.get("model") if isinstance(message, dict) else None
        return model if isinstance(model, str) else None

    # ---- content safety: where the text is (proxy/protocols/text_slots.py, shape.py)

    def request_text_slots(self, body: Any) -> list[TextSlot]:
        return text_slots.anthropic_request(body)

    def response_text_slots(self, body: Any) -> list[TextSlot]:
        return text_slots.anthropic_response(body)

    def event_text_slots(self, event: SSEEvent) -> list[TextSlot]:
        return text_slots.anthropic_event(event.json(), event.event)

    def event_closes(self, event: SSEEvent) -> tuple[Channel, ...]:
        return text_slots.anthropic_closes(event.json(), event.event)

    def continuation_event(self, template: SSEEvent, slot: TextSlot, text: str) -> SSEEvent:
        payload = text_slots.anthropic_continuation(template.json(), slot, text)
        return SSEEvent.from_json(payload, event=template.event)

    def request_shape_problem(self, body: Any, path: str) -> str | None:
        if not isinstance(body, dict):
            return "the request body must be a JSON object"
        return anthropic_shape_problem(body, path)

    # The functions themselves, not methods calling them: one call less on every request.
    plain_prompt = staticmethod(plain.anthropic_prompt)
    plain_answer = staticmethod(plain.anthropic_answer)

    # ---- agent runs (proxy/limits/run_identity.py)

    def last_tool_calls(self, body: Any) -> list[tuple[Any, Any]]:
        """The `tool_use` blocks of the last assistant message."""
        for message in reversed(self.request_messages(body)):
            if message.get("role") == "assistant":
                content = message.get("content")
                blocks = content if isinstance(content, list) else []
                return [
                    (block.get("name"), block.get("input"))
                    for block in blocks
                    if isinstance(block, dict) and block.get("type") == "tool_use"
                ]
        return []

    # ---- functions an answer proposes, tools a request offers (proxy/protocols/tool_calls.py)

    tool_call_markers: ClassVar[tuple[bytes, ...]] = (b"tool_use", b"input_json_delta")

    def body_tool_calls(self, body: Any) -> list[str]:
        return tool_calls.anthropic_body_calls(body)

    def event_tool_calls(self, event: SSEEvent) -> list[CallPart]:
        if not self.may_propose_calls(event.raw):
            return []
        return tool_calls.anthropic_event_calls(event.json(), event.event)

    def filter_request_tools(self, body: Any, allowed: Callable[[str], bool]) -> tuple[Any | None, list[str]]:
        return tool_calls.anthropic_filter_tools(body, allowed)

    def forced_function(self, body: Any) -> str | None:
        return tool_calls.anthropic_forced_function(body)

    # ---- degraded replies (proxy/forward/degrade.py)

    def assistant_answer(self, request_id: str, model: str, text: str, stream: bool) -> bytes | None:
        """A whole assistant turn saying `text`, as this API answers (streamed as SSE when asked)."""
        message: dict[str, Any] = {
            "id": f"msg_degraded_{request_id}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return cached.anthropic_stream(message) if stream else orjson.dumps(message)

    # ---- prompt size (proxy/limits/estimate.py) and conversation structure (proxy/truncation/)

    def output_cap(self, body: Any, default: int) -> int:
        """`max_tokens` (required by the API); Messages has no choices."""
        return prompt_size.output_cap(body, ("max_tokens",), default, choices=False)

    def conversation(self, body: Any) -> Conversation | None:
        return anthropic_messages(body)

    # ---- response cache (proxy/cache/, proxy/protocols/cached.py)

    non_answer_fields: ClassVar[frozenset[str]] = frozenset({"stream", "metadata", "service_tier"})
    answer_headers: ClassVar[tuple[str, ...]] = ("anthropic-version", "anthropic-beta")

    def stream_usage_requested(self, body: Any) -> bool:
        return True  # message_start and message_delta always carry it

    def stream_assembler(self) -> cached.Assembler | None:
        return cached.AnthropicAssembler()

    def cached_stream(self, body: dict[str, Any], include_usage: bool) -> bytes | None:
        return cached.anthropic_stream(cached.fresh_body(body))

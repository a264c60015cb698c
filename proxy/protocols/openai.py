"""OpenAI wire format: chat completions, completions, responses, embeddings."""

from __future__ import annotations

from typing import Any, ClassVar

from proxy.errors import ProxyError
from proxy.protocols.base import Protocol, Usage, _int
from proxy.protocols.sse import SSEEvent

# The `type` values the OpenAI API uses, which SDK users match on.
_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "invalid_request_error",
    "permission": "invalid_request_error",
    "not_found": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "upstream": "server_error",
    "timeout": "server_error",
    "unavailable": "server_error",
    "internal": "server_error",
}
_DEFAULT_CODES = {
    "authentication": "invalid_api_key",
    "permission": "permission_denied",
    "not_found": "not_found",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_exceeded",
    "upstream": "upstream_error",
    "timeout": "upstream_timeout",
    "unavailable": "service_unavailable",
}


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens", raw.get("input_tokens"))
    completion = raw.get("completion_tokens", raw.get("output_tokens"))
    in_details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
    out_details = raw.get("completion_tokens_details") or raw.get("output_tokens_details") or {}
    return Usage(
        input_tokens=_int(prompt),
        output_tokens=_int(completion) if completion is not None else (0 if _int(prompt) is not None else None),
        cached_input_tokens=_int(in_details.get("cached_tokens")) if isinstance(in_details, dict) else None,
        reasoning_tokens=_int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else None,
    )


class OpenAIProtocol(Protocol):
    name: ClassVar[str] = "openai"
    parses_json: ClassVar[bool] = True

    def error_payload(self, err: ProxyError) -> dict[str, Any]:
        return {
            "error": {
                "message": err.message,
                "type": _ERROR_TYPES.get(err.kind, "server_error"),
                "param": None,
                "code": err.code or _DEFAULT_CODES.get(err.kind),
            }
        }

    def stream_error_event(self, err: ProxyError) -> SSEEvent:
        # The SDKs raise APIError on a `data:` event whose payload has an `error` key.
        return SSEEvent.from_json(self.error_payload(err))

    def request_messages(self, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, dict):
            return []
        messages = body.get("messages")
        if isinstance(messages, list):
            return [m for m in messages if isinstance(m, dict)]
        items = body.get("input")  # Responses API
        if isinstance(items, str):
            return [{"role": "user", "content": items}]
        if isinstance(items, list):
            return [m for m in items if isinstance(m, dict)]
        return []

    def body_text(self, body: Any) -> str:
        if not isinstance(body, dict):
            return ""
        parts: list[str] = []
        for choice in body.get("choices") or ():
            message = choice.get("message") or {}
            if isinstance(message.get("content"), str):
                parts.append(message["content"])
            elif isinstance(choice.get("text"), str):
                parts.append(choice["text"])
        for item in body.get("output") or ():
            for content in item.get("content") or () if isinstance(item, dict) else ():
                if isinstance(content, dict) and isinstance(content.get("text"), str):
                    parts.append(content["text"])
        return "".join(parts)

    def event_text(self, event: SSEEvent) -> str | None:
        payload = event.json()
        if not isinstance(payload, dict):
            return None
        if payload.get("type") == "response.output_text.delta":
            delta = payload.get("delta")
            return delta if isinstance(delta, str) else None
        choices = payload.get("choices")
        if not choices or not isinstance(choices[0], dict):
            return None
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            return delta["content"]
        text = choice.get("text")
        return text if isinstance(text, str) else None

    def body_usage(self, body: Any) -> Usage | None:
        return _usage(body.get("usage")) if isinstance(body, dict) else None

    def event_usage(self, event: SSEEvent) -> Usage | None:
        payload = event.json()
        if not isinstance(payload, dict):
            return None
        if payload.get("type") == "response.completed":
            response = payload.get("response")
            return _usage(response.get("usage")) if isinstance(response, dict) else None
        return _usage(payload.get("usage"))

    def is_terminal_event(self, event: SSEEvent) -> bool:
        return event.data == "[DONE]" or event.event == "response.completed"

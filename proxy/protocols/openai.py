"""OpenAI wire format: chat completions, completions, responses, embeddings."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, ClassVar

import orjson

from proxy.errors import ProxyError
from proxy.protocols import cached, plain, text_slots, tool_calls
from proxy.protocols.base import Protocol, Usage, reported_counts
from proxy.protocols.conversation import Conversation, openai_chat
from proxy.protocols.shape import openai_shape_problem
from proxy.protocols.sse import SSEEvent
from proxy.protocols.text_slots import Channel, TextSlot
from proxy.protocols.tool_calls import CallPart

# The `type` values the OpenAI API uses, which SDK users match on.
_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "invalid_request_error",
    "permission": "invalid_request_error",
    "not_found": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "insufficient_quota": "insufficient_quota",
    "upstream": "server_error",
    "upstream_protocol": "server_error",
    "upstream_limit": "server_error",
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
    "insufficient_quota": "insufficient_quota",
    "upstream": "upstream_error",
    "upstream_protocol": "upstream_bad_response",
    "upstream_limit": "upstream_response_too_large",
    "timeout": "upstream_timeout",
    "unavailable": "service_unavailable",
}


# Stream events are looked at through their raw bytes first, and parsed only when they can matter:
# `"usage"` can only be the key itself, since inside a JSON string its quotes would be escaped.
_USAGE_KEY = b'"usage"'
_USAGE_NULL = re.compile(rb'"usage"\s*:\s*null')
_SPACE = b" \t\r\n"
_TRAILING_COMMA = re.compile(rb"\s*,?\s*")
_COMMA = ord(",")
_USAGE_NULL_LAST = b',"usage":null}\n\n'  # the last member of the top-level object: it closes the event


def _may_carry_usage(raw: bytes) -> bool:
    """False when every `usage` key of the event is null: most chunks of a stream that asked for usage."""
    keys = raw.count(_USAGE_KEY)
    return keys > 0 and keys > len(_USAGE_NULL.findall(raw))


def _without_null_usage(raw: bytes) -> bytes | None:
    """The event without its one `"usage":null` member (and the comma that joined it), cut from the
    bytes; None when its usage is not exactly one null, and the payload has to be read."""
    if raw.endswith(_USAGE_NULL_LAST):  # compact JSON, usage last: how OpenAI sends every chunk but one
        return raw[: -len(_USAGE_NULL_LAST)] + b"}\n\n"
    if raw.count(_USAGE_KEY) != 1:
        return None
    start = raw.find(_USAGE_KEY)
    found = _USAGE_NULL.match(raw, start)
    return None if found is None else _cut(raw, start, found.end())


def _cut(raw: bytes, start: int, end: int) -> bytes:
    before = start
    while before > 0 and raw[before - 1] in _SPACE:
        before -= 1
    if before > 0 and raw[before - 1] == _COMMA:
        return raw[: before - 1] + raw[end:]
    after = _TRAILING_COMMA.match(raw, end)
    return raw[:start] + raw[after.end() if after else end :]


def _usage(raw: Any) -> Usage | None:
    """Chat/completions (`prompt_tokens`), Responses (`input_tokens`) and embeddings (input only)."""
    if not isinstance(raw, dict):
        return None
    in_details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
    out_details = raw.get("completion_tokens_details") or raw.get("output_tokens_details") or {}
    completion = raw.get("completion_tokens", raw.get("output_tokens"))
    usage = reported_counts(
        raw.get("prompt_tokens", raw.get("input_tokens")),
        completion,
        in_details.get("cached_tokens") if isinstance(in_details, dict) else None,
        None,  # cache_write_tokens: OpenAI reports none
        out_details.get("reasoning_tokens") if isinstance(out_details, dict) else None,
    )
    if usage.input_tokens is not None and usage.cached_input_tokens:  # OpenAI counts cached tokens inside the prompt
        usage.input_tokens = max(0, usage.input_tokens - usage.cached_input_tokens)
    if completion is None and usage.input_tokens is not None:  # embeddings: input only
        usage.output_tokens = 0
    return usage


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

    def system_prompt(self, body: Any) -> str | list[Any] | None:
        instructions = body.get("instructions") if isinstance(body, dict) else None
        return instructions if isinstance(instructions, str) else None

    def request_input_text(self, body: Any) -> str:
        if not isinstance(body, dict):
            return ""
        raw = body.get("prompt", body.get("input"))
        if isinstance(raw, str):
            return raw
        if isinstance(raw, list):
            return "\n".join(item for item in raw if isinstance(item, str))
        return ""

    def body_text(self, body: Any) -> str:
        if not isinstance(body, dict):
            return ""
        parts: list[str] = []
        choices = body.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            message = choice.get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                parts.append(message["content"])
            elif isinstance(choice.get("text"), str):
                parts.append(choice["text"])
        output = body.get("output")
        for item in output if isinstance(output, list) else ():
            content = item.get("content") if isinstance(item, dict) else None
            for block in content if isinstance(content, list) else ():
                if isinstance(block, dict) and isinstance(block.get("text"), str):
                    parts.append(block["text"])
        return "".join(parts)

    def event_text(self, event: SSEEvent) -> str | None:
        payload = event.json()
        if not isinstance(payload, dict):
            return None
        if payload.get("type") == "response.output_text.delta":
            delta = payload.get("delta")
            return delta if isinstance(delta, str) else None
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
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
        if not _may_carry_usage(event.raw):
            return None
        payload = event.json()
        if not isinstance(payload, dict):
            return None
        if payload.get("type") == "response.completed":
            response = payload.get("response")
            return _usage(response.get("usage")) if isinstance(response, dict) else None
        return _usage(payload.get("usage"))

    # `raw.find(x) >= 0`, not `x in raw`: on bytes, `in` first tries x as an int (a TypeError built and cleared).
    def stream_usage(self, event: SSEEvent, strip: bool) -> tuple[Usage | None, SSEEvent | None]:
        """The common case, a chunk with no usage or `"usage":null`, is settled on the raw bytes."""
        raw = event.raw
        if raw.find(_USAGE_KEY) < 0:  # one scan: no usage member at all (the upstream was not asked to add it)
            return None, event
        if (cut := _without_null_usage(raw)) is not None:
            return None, SSEEvent(cut) if strip else event
        return super().stream_usage(event, strip)

    def is_terminal_event(self, event: SSEEvent) -> bool:
        raw = event.raw  # decoded events end with LF LF, and `[DONE]` is a whole data line
        if raw.endswith(b"[DONE]\n\n") and event.data == "[DONE]":
            return True
        return raw.find(b"response.completed") >= 0 and event.event == "response.completed"

    def event_model(self, event: SSEEvent) -> str | None:
        if event.raw.find(b'"model"') < 0:
            return None
        payload = event.json()
        if not isinstance(payload, dict):
            return None
        model = payload.get("model")
        if model is None and isinstance(payload.get("response"), dict):
            model = payload["response"].get("model")
        return model if isinstance(model, str) else None

    def ask_stream_usage(self, body: Any) -> dict[str, Any] | None:
        """Chat and legacy completions stream usage only when asked; the Responses API always does."""
        if not isinstance(body, dict) or body.get("stream") is not True:
            return None
        if "messages" not in body and "prompt" not in body:
            return None
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            return None
        if options and options.get("include_usage") is True:
            return None
        return {**body, "stream_options": {**(options or {}), "include_usage": True}}

    def strip_stream_usage(self, event: SSEEvent) -> SSEEvent | None:
        """Drop the usage-only chunk and the `"usage":null` the option adds to every other chunk.

        The key is cut from the raw bytes, without parsing, so the rest of the event stays byte
        for byte as sent; only if it cannot be found exactly once is the payload re-serialised.
        """
        if (cut := _without_null_usage(event.raw)) is not None:
            return SSEEvent(cut)
        if event.raw.find(_USAGE_KEY) < 0:
            return event
        payload = event.json()
        if not isinstance(payload, dict) or "usage" not in payload:
            return event
        if payload["usage"] is not None and not payload.get("choices"):
            return None
        rest = {key: value for key, value in payload.items() if key != "usage"}
        return SSEEvent.from_json(rest, event=event.event)

    # ---- content safety: where the text is (proxy/protocols/text_slots.py, shape.py)

    def request_text_slots(self, body: Any) -> list[TextSlot]:
        return text_slots.openai_request(body)

    def response_text_slots(self, body: Any) -> list[TextSlot]:
        return text_slots.openai_response(body)

    def event_text_slots(self, event: SSEEvent) -> list[TextSlot]:
        return text_slots.openai_event(event.json())

    def event_closes(self, event: SSEEvent) -> tuple[Channel, ...]:
        payload = event.json()  # `data` only matters when it is no JSON (`[DONE]`)
        return text_slots.openai_closes(payload, event.data if payload is None else None)

    def continuation_event(self, template: SSEEvent, slot: TextSlot, text: str) -> SSEEvent:
        return SSEEvent.from_json(text_slots.openai_continuation(template.json(), slot, text), event=template.event)

    def request_shape_problem(self, body: Any, path: str) -> str | None:
        return openai_shape_problem(body, path) if isinstance(body, dict) else "the request body must be a JSON object"

    # The functions themselves, not methods calling them: one call less on every request.
    plain_prompt = staticmethod(plain.openai_prompt)
    plain_answer = staticmethod(plain.openai_answer)

    # ---- agent runs (proxy/limits/run_identity.py)

    def last_tool_calls(self, body: Any) -> list[tuple[Any, Any]]:
        """Chat: the last assistant message's `tool_calls`; Responses: the trailing round of `function_call` items."""
        if not isinstance(body, dict):
            return []
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in reversed(messages):
                if isinstance(message, dict) and message.get("role") == "assistant":
                    calls = message.get("tool_calls")
                    if not isinstance(calls, list):
                        return []
                    functions = [call.get("function") for call in calls if isinstance(call, dict)]
                    return [(f.get("name"), f.get("arguments")) for f in functions if isinstance(f, dict)]
            return []
        items = body.get("input")
        found: list[tuple[Any, Any]] = []
        for item in reversed(items) if isinstance(items, list) else ():
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "function_call":
                found.append((item.get("name"), item.get("arguments")))
            elif kind != "function_call_output" or found:
                break
        return found[::-1]

    # ---- functions an answer proposes, tools a request offers (proxy/protocols/tool_calls.py)

    tool_call_markers: ClassVar[tuple[bytes, ...]] = (b'"tool_calls"', b"function_call", b"custom_tool_call")

    def body_tool_calls(self, body: Any) -> list[str]:
        return tool_calls.openai_body_calls(body)

    def event_tool_calls(self, event: SSEEvent) -> list[CallPart]:
        if not self.may_propose_calls(event.raw):
            return []
        return tool_calls.openai_event_calls(event.json())

    def filter_request_tools(self, body: Any, allowed: Callable[[str], bool]) -> tuple[Any | None, list[str]]:
        return tool_calls.openai_filter_tools(body, allowed)

    def forced_function(self, body: Any) -> str | None:
        return tool_calls.openai_forced_function(body)

    # ---- degraded replies (proxy/forward/degrade.py)

    def assistant_answer(self, request_id: str, model: str, text: str, stream: bool) -> bytes | None:
        """A whole assistant turn saying `text`, as this API answers (streamed as SSE when asked)."""
        message = {"role": "assistant", "content": text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        body = {"id": f"chatcmpl-degraded-{request_id}", "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": [choice], "usage": usage}  # fmt: skip
        return cached.openai_chat_stream(body, include_usage=False) if stream else orjson.dumps(body)

    # ---- conversation structure (proxy/truncation/)

    def conversation(self, body: Any) -> Conversation | None:
        """Chat completions; the Responses API's `input` items are left alone (None)."""
        return openai_chat(body)

    # ---- response cache (proxy/cache/, proxy/protocols/cached.py)

    non_answer_fields: ClassVar[frozenset[str]] = frozenset(
        {"stream", "stream_options", "user", "metadata", "store", "service_tier", "safety_identifier",
         "prompt_cache_key", "prompt_cache_retention"}
    )  # fmt: skip

    def stream_usage_requested(self, body: Any) -> bool:
        options = body.get("stream_options") if isinstance(body, dict) else None
        return isinstance(options, dict) and options.get("include_usage") is True

    def stream_assembler(self) -> cached.Assembler | None:
        return cached.OpenAIChatAssembler()

    def cached_stream(self, body: dict[str, Any], include_usage: bool) -> bytes | None:
        return cached.openai_chat_stream(cached.fresh_body(body), include_usage)

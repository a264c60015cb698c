"""Degraded replies: when every upstream failed, a fixed message as a normal assistant answer.

An agent that gets an error often crashes or loops; one that gets an assistant turn saying
"the model is unavailable" can carry on. The reply has the exact shape of the endpoint
the caller used (an OpenAI chat completion or an Anthropic message, streamed as SSE when
a stream was asked for), costs no tokens, and is marked `x-agent-proxy-degraded: <kind>`
so clients and logs can tell it from a real answer. Other endpoints (embeddings,
responses, tools) get the error instead: a made-up answer there would be wrong, not degraded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from proxy.exchange import Exchange, Reply
from proxy.forward.config import DegradedReplies

DEGRADED_HEADER = "x-agent-proxy-degraded"
KINDS = ("rate_limited", "timeout", "upstream_error")


def degraded_reply(ex: Exchange, config: DegradedReplies | None, kind: str, model: str | None) -> Reply | None:
    """The reply for failure `kind`, or None when the route configures none or the endpoint has no chat shape."""
    message = getattr(config, kind, None) if config is not None else None
    if message is None or not ex.protocol.parses_json:
        return None
    build = _BUILDERS.get(ex.protocol.name)
    if build is None or not ex.body:
        return None
    body = ex.request_json
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return None
    stream = ex.protocol.is_stream_request(body)
    payload = build(ex.request_id, model or "agent-proxy", message, stream)
    headers = {DEGRADED_HEADER: kind}
    if stream:
        headers.update({"content-type": "text/event-stream", "cache-control": "no-cache"})
    return Reply(200, payload, headers, reason=f"degraded:{kind}")


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n"


def _openai(request_id: str, model: str, text: str, stream: bool) -> bytes:
    base = {"id": f"chatcmpl-degraded-{request_id}", "created": int(time.time()), "model": model}
    if not stream:
        message = {"role": "assistant", "content": text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return orjson.dumps({**base, "object": "chat.completion", "choices": [choice], "usage": usage})

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**base, "object": "chat.completion.chunk", "choices": [choice]})

    return b"".join(
        (chunk({"role": "assistant", "content": ""}), chunk({"content": text}), chunk({}, "stop"), _sse(b"[DONE]"))
    )


def _anthropic(request_id: str, model: str, text: str, stream: bool) -> bytes:
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
    if not stream:
        return orjson.dumps(message)
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 0},
        },
        {"type": "message_stop"},
    ]
    return b"".join(_sse(event, event["type"]) for event in events)


_BUILDERS: dict[str, Callable[[str, str, str, bool], bytes]] = {"openai": _openai, "anthropic": _anthropic}

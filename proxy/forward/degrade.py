"""Degraded replies: when every upstream failed, a fixed message as a normal assistant answer.

An agent that gets an error often crashes or loops; one that gets an assistant turn saying
"the model is unavailable" can carry on. The reply has the exact shape of the endpoint
the caller used (an OpenAI chat completion or an Anthropic message, streamed as SSE when
a stream was asked for), costs no tokens, and is marked `x-agent-proxy-degraded: <kind>`
so clients and logs can tell it from a real answer. Other endpoints (embeddings,
responses, tools) get the error instead: a made-up answer there would be wrong, not degraded.
"""

from __future__ import annotations

from proxy.exchange import Exchange, Reply
from proxy.forward.config import DegradedReplies

DEGRADED_HEADER = "x-agent-proxy-degraded"
KINDS = ("rate_limited", "timeout", "upstream_error")


def degraded_reply(ex: Exchange, config: DegradedReplies | None, kind: str, model: str | None) -> Reply | None:
    """The reply for failure `kind`, or None when the route configures none or the endpoint has no chat shape."""
    message = getattr(config, kind, None) if config is not None else None
    if message is None or not ex.has_llm_body:
        return None
    body = ex.request_json
    if ex.protocol.chat_messages(body) is None:
        return None
    stream = ex.protocol.is_stream_request(body)
    payload = ex.protocol.assistant_answer(ex.request_id, model or "agent-proxy", message, stream)
    if payload is None:  # the protocol has no chat shape
        return None
    headers = {DEGRADED_HEADER: kind}
    if stream:
        headers.update({"content-type": "text/event-stream", "cache-control": "no-cache"})
    return Reply(200, payload, headers, reason=f"degraded:{kind}")

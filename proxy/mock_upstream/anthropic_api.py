"""Anthropic Messages endpoints: create (plain and streamed) and count_tokens."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from .text import (
    TOOL_ARGS,
    TOOL_ARGS_PIECES,
    content_text,
    count_tokens,
    last_user_text,
    wants_tool_call,
)
from .wire import answer_pieces, behaviour_of, read_json, require, respond_json, respond_sse, sse_frame


async def _parse(request: web.Request) -> tuple[dict[str, Any], str, list[Any], int]:
    body = read_json(await request.read())
    model = require(body, "model", str)
    messages = require(body, "messages", list)
    return body, model, messages, input_tokens(body, messages)


def input_tokens(body: dict[str, Any], messages: list[Any]) -> int:
    """System prompt counts as one more message, whether given as a string or blocks."""
    system = body.get("system")
    texts = [content_text(system)] if system else []
    texts += [content_text(m.get("content")) for m in messages if isinstance(m, dict)]
    return count_tokens(texts)


async def count_tokens_endpoint(request: web.Request) -> web.StreamResponse:
    _, _, _, tokens = await _parse(request)
    return await respond_json(request, {"input_tokens": tokens})


async def messages(request: web.Request) -> web.StreamResponse:
    body, model, msgs, prompt = await _parse(request)
    n = behaviour_of(request).next_id()
    user = last_user_text(msgs)
    tools = body.get("tools")
    if wants_tool_call(tools, user):
        name = tools[0].get("name", "tool") if isinstance(tools[0], dict) else "tool"
        block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_mock{n:06d}", "name": name}
        block["input"] = orjson.loads(TOOL_ARGS)
        pieces, stop = list(TOOL_ARGS_PIECES), "tool_use"
    else:
        pieces, stop = answer_pieces(request, user), "end_turn"
        block = {"type": "text", "text": "".join(pieces)}
    usage = None if behaviour_of(request).omit_usage else _usage(prompt, len(pieces))
    message: dict[str, Any] = {
        "id": f"msg_mock{n:06d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": stop,
        "stop_sequence": None,
    }
    if body.get("stream"):
        return await respond_sse(request, _events(message, pieces, usage))
    return await respond_json(request, message if usage is None else {**message, "usage": usage})


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _events(message: dict[str, Any], pieces: list[str], usage: dict[str, Any] | None) -> Iterator[bytes]:
    """Real servers report input usage up front and the final output count in message_delta."""
    block = message["content"][0]
    start: dict[str, Any] = {**message, "content": [], "stop_reason": None}
    if usage is not None:
        start["usage"] = {**usage, "output_tokens": 1}
    if block["type"] == "tool_use":
        opening = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    else:
        opening = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in pieces]
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": opening},
        {"type": "ping"},
        *({"type": "content_block_delta", "index": 0, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None}}
        | ({} if usage is None else {"usage": {"output_tokens": usage["output_tokens"]}}),
        {"type": "message_stop"},
    ]
    for event in events:
        yield sse_frame(event, event=event["type"])

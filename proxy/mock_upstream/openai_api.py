"""OpenAI-shaped endpoints: chat, legacy completions, Responses, embeddings, models."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from .text import (
    TOOL_ARGS,
    TOOL_ARGS_PIECES,
    content_text,
    count_tokens,
    last_user_text,
    wants_tool_call,
)
from .wire import MockBadRequest, answer_pieces, behaviour_of, read_json, require, respond_json, respond_sse, sse_frame

DONE = sse_frame("[DONE]")


def chat_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _wants_usage_chunk(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def parse(request: web.Request) -> tuple[dict[str, Any], str, int]:
    body = read_json(await request.read())
    model = require(body, "model", str)
    return body, model, behaviour_of(request).next_id()


# ---------------------------------------------------------------- chat completions


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body, model, n = await parse(request)
    messages = require(body, "messages", list)
    user = last_user_text(messages)
    prompt = count_tokens(content_text(m.get("content")) for m in messages if isinstance(m, dict))
    tools = body.get("tools")
    if wants_tool_call(tools, user):
        pieces, message = _chat_tool_message(tools[0], n)
    else:
        pieces = answer_pieces(request, user)
        message = {"role": "assistant", "content": "".join(pieces), "refusal": None, "annotations": []}
    base = {"id": f"chatcmpl-mock{n:06d}", "created": int(time.time()), "model": model, "system_fingerprint": "fp_mock"}
    usage = None if behaviour_of(request).omit_usage else chat_usage(prompt, len(pieces))
    if body.get("stream"):
        return await respond_sse(request, _chat_chunks(base, message, pieces, usage, _wants_usage_chunk(body)))
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    payload = {**base, "object": "chat.completion", "choices": [choice], "service_tier": "default"}
    return await respond_json(request, payload if usage is None else {**payload, "usage": usage})


def _chat_tool_message(tool: Any, n: int) -> tuple[list[str], dict[str, Any]]:
    name = (tool.get("function") or tool).get("name", "tool") if isinstance(tool, dict) else "tool"
    call = {"id": f"call_mock{n:06d}", "type": "function", "function": {"name": name, "arguments": TOOL_ARGS}}
    return list(TOOL_ARGS_PIECES), {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}


def _chat_chunks(
    base: dict[str, Any],
    message: dict[str, Any],
    pieces: list[str],
    usage: dict[str, Any] | None,
    usage_chunk: bool,
) -> Iterator[bytes]:
    extra = {"usage": None} if usage_chunk and usage is not None else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse_frame({**base, "object": "chat.completion.chunk", "choices": [choice], **extra})

    calls = message.get("tool_calls")
    if calls:
        head = {**calls[0], "index": 0, "function": {"name": calls[0]["function"]["name"], "arguments": ""}}
        yield chunk({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None})
        for piece in pieces:
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    else:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in pieces:
            yield chunk({"content": piece})
    yield chunk({}, "tool_calls" if calls else "stop")
    if usage_chunk and usage is not None:
        yield sse_frame({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    yield DONE


# ---------------------------------------------------------------- legacy completions


async def completions(request: web.Request) -> web.StreamResponse:
    body, model, n = await parse(request)
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise MockBadRequest("Missing or invalid parameter: 'prompt' must be a string or a list of strings.")
    pieces = answer_pieces(request, prompts[0] if prompts else "")
    base = {"id": f"cmpl-mock{n:06d}", "object": "text_completion", "created": int(time.time()), "model": model}
    usage = None if behaviour_of(request).omit_usage else chat_usage(count_tokens(prompts), len(pieces))
    if usage is not None:
        usage = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    if body.get("stream"):
        return await respond_sse(request, _completion_chunks(base, pieces, usage, _wants_usage_chunk(body)))
    choice = {"text": "".join(pieces), "index": 0, "logprobs": None, "finish_reason": "stop"}
    payload = {**base, "choices": [choice]}
    return await respond_json(request, payload if usage is None else {**payload, "usage": usage})


def _completion_chunks(
    base: dict[str, Any], pieces: list[str], usage: dict[str, Any] | None, usage_chunk: bool
) -> Iterator[bytes]:
    for piece in pieces:
        yield sse_frame({**base, "choices": [{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}]})
    yield sse_frame({**base, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]})
    if usage_chunk and usage is not None:
        yield sse_frame({**base, "choices": [], "usage": usage})
    yield DONE

"""OpenAI Responses API, embeddings and model listing."""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from .openai_api import parse
from .text import content_text, count_tokens, last_user_text
from .wire import MockBadRequest, answer_pieces, behaviour_of, require, respond_json, respond_sse, sse_frame

EMBEDDING_DIM = 64
MODELS: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "mock-model")
MODELS_CREATED = 1_700_000_000


# ---------------------------------------------------------------- Responses API


def _input_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = require(body, "input", (str, list))
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    return [item for item in raw if isinstance(item, dict)]


def _item_text(item: dict[str, Any]) -> str:
    return content_text(item["content"]) if "content" in item else content_text([item])


async def responses(request: web.Request) -> web.StreamResponse:
    body, model, n = await parse(request)
    items = _input_messages(body)
    instructions = body.get("instructions")
    texts = ([instructions] if isinstance(instructions, str) else []) + [_item_text(i) for i in items]
    pieces = answer_pieces(request, last_user_text(items))
    usage = None if behaviour_of(request).omit_usage else _responses_usage(count_tokens(texts), len(pieces))
    final = _response_object(body, model, n, "".join(pieces), usage)
    if body.get("stream"):
        return await respond_sse(request, _response_events(final, pieces))
    return await respond_json(request, final)


def _responses_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _output_message(n: int, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": f"msg_mock{n:06d}", "type": "message", "status": status, "role": "assistant", "content": [part]}


def _response_object(
    body: dict[str, Any], model: str, n: int, text: str, usage: dict[str, Any] | None
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": f"resp_mock{n:06d}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [_output_message(n, text, "completed")],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "user": None,
        "metadata": body.get("metadata") or {},
    }
    return obj if usage is None else {**obj, "usage": usage}


def _response_events(final: dict[str, Any], pieces: list[str]) -> Iterator[bytes]:
    """The event sequence the SDK's stream accumulator requires, each tagged with ``event:``."""
    item_done = final["output"][0]
    text = item_done["content"][0]["text"]
    item_id = item_done["id"]
    pending = {**final, "status": "in_progress", "output": [], "usage": None}
    empty_part = {**item_done["content"][0], "text": ""}
    item_added = {**item_done, "status": "in_progress", "content": []}
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": pending}),
        ("response.in_progress", {"response": pending}),
        ("response.output_item.added", {"output_index": 0, "item": item_added}),
        ("response.content_part.added", {**where, "part": empty_part}),
        *(("response.output_text.delta", {**where, "delta": p, "logprobs": []}) for p in pieces),
        ("response.output_text.done", {**where, "text": text, "logprobs": []}),
        ("response.content_part.done", {**where, "part": item_done["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": item_done}),
        ("response.completed", {"response": final}),
    ]
    for seq, (kind, data) in enumerate(events):
        yield sse_frame({"type": kind, "sequence_number": seq, **data}, event=kind)


# ---------------------------------------------------------------- embeddings and models


def embedding_vector(text: str) -> list[float]:
    """A hashed bag of words: texts sharing words point the same way, so a semantic cache demo hits offline.

    Each word adds +-1 to one of the dimensions its hash picks; eighths of small integers are exact
    in float32, so float and base64 answers agree bit for bit.
    """
    counts = [0] * EMBEDDING_DIM
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        counts[digest[0] % EMBEDDING_DIM] += 1 if digest[1] & 1 else -1
    if not any(counts):
        counts[0] = 1
    return [c / 8.0 for c in counts]


def _embedding_inputs(raw: Any) -> list[str]:
    """Token-array inputs are embedded by their textual form; the mock has no vocabulary."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        return [" ".join(map(str, raw))]
    if isinstance(raw, list) and raw and all(isinstance(x, (str, list)) for x in raw):
        return [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw]
    raise MockBadRequest("'input' must be a string, a list of strings or token arrays.")


async def embeddings(request: web.Request) -> web.StreamResponse:
    body, model, _ = await parse(request)
    inputs = _embedding_inputs(require(body, "input", (str, list)))
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text)
        encoded: Any = base64.b64encode(struct.pack(f"<{EMBEDDING_DIM}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    payload: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if not behaviour_of(request).omit_usage:
        tokens = count_tokens(inputs, per_message=0)
        payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return await respond_json(request, payload)


async def models(request: web.Request) -> web.StreamResponse:
    data = [{"id": m, "object": "model", "created": MODELS_CREATED, "owned_by": "mock"} for m in MODELS]
    return await respond_json(request, {"object": "list", "data": data})

"""Cached answers on the wire: a stream assembled into one body, and a body served again, streamed or not.

The cache keeps every answer as the whole response body the endpoint would have returned
without streaming, whichever way it was asked; these functions turn a stream into that
body and that body back into a stream, for OpenAI chat completions and Anthropic messages.
Anything they do not fully understand (another endpoint's events, a delta kind they do not
know, logprobs, an error event) is not stored, or not served streamed: a cached answer must
be the answer, whole.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson

from proxy.protocols.sse import SSEEvent

_CHAT_DELTA_TEXT = ("content", "refusal")


class Assembler:
    """Fed the events of a stream that went to the caller; `body()` is the whole answer, or None."""

    def __init__(self) -> None:
        self.failed = False
        self.done = False

    def feed(self, event: SSEEvent) -> None:
        if self.failed or self.done:
            return
        try:
            self._feed(event)
        except (KeyError, TypeError, ValueError, AttributeError):  # not the shape it should be: keep nothing
            self.failed = True

    def _feed(self, event: SSEEvent) -> None:
        raise NotImplementedError

    def body(self, usage: dict[str, int]) -> dict[str, Any] | None:
        """The non-streamed body, with `usage` (token counts by kind, as `Usage.counts()` gives them) where the
        stream did not carry it; None unless the stream was complete."""
        raise NotImplementedError


# ---- OpenAI chat completions


class OpenAIChatAssembler(Assembler):
    def __init__(self) -> None:
        super().__init__()
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None

    def _feed(self, event: SSEEvent) -> None:
        if event.data == "[DONE]":
            self.done = True
            return
        payload = event.json()
        if not isinstance(payload, dict) or payload.get("object") != "chat.completion.chunk" or "error" in payload:
            self.failed = True
            return
        for name in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if name in payload and name not in self.head:
                self.head[name] = payload[name]
        if payload.get("usage") is not None:
            self.usage = payload["usage"]
        for choice in payload.get("choices") or ():
            index = choice["index"]
            if not isinstance(index, int) or choice.get("logprobs") is not None:
                raise ValueError("logprobs are not kept")
            state = self.choices.setdefault(index, {"role": "assistant", "text": {}, "calls": {}, "finish": None})
            for name, value in (choice.get("delta") or {}).items():
                if name == "role":
                    state["role"] = value
                elif name in _CHAT_DELTA_TEXT and isinstance(value, str):
                    state["text"][name] = state["text"].get(name, "") + value
                elif name == "tool_calls" and isinstance(value, list):
                    for call in value:
                        _merge_call(state["calls"], call)
                elif value not in (None, [], ""):
                    raise ValueError(f"delta {name} is not kept")
            if choice.get("finish_reason") is not None:
                state["finish"] = choice["finish_reason"]

    def body(self, usage: dict[str, int]) -> dict[str, Any] | None:
        if self.failed or not self.done or not self.choices or "id" not in self.head:
            return None
        if any(state["finish"] is None for state in self.choices.values()):
            return None
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            message: dict[str, Any] = {
                "role": state["role"],
                "content": state["text"].get("content"),
                "refusal": state["text"].get("refusal"),
            }
            if state["calls"]:
                message["tool_calls"] = [state["calls"][i] for i in sorted(state["calls"])]
            choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": state["finish"]})
        body = {**self.head, "object": "chat.completion", "choices": choices}
        reported = self.usage if isinstance(self.usage, dict) else openai_usage(usage)
        if reported is not None:
            body["usage"] = reported
        return body


def _merge_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    index = delta["index"]
    if not isinstance(index, int):
        raise ValueError("tool call index")
    call = calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    if delta.get("type"):
        call["type"] = delta["type"]
    function = delta.get("function") or {}
    for name in ("name", "arguments"):
        if isinstance(function.get(name), str):
            call["function"][name] += function[name]


def openai_usage(usage: dict[str, int]) -> dict[str, Any] | None:
    """OpenAI's usage object from the disjoint counts (its prompt count includes cached tokens)."""
    if "input_tokens" not in usage and "output_tokens" not in usage:
        return None
    cached = usage.get("cached_input_tokens", 0)
    prompt = usage.get("input_tokens", 0) + cached
    completion = usage.get("output_tokens", 0)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    out["total_tokens"] = prompt + completion
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    if usage.get("reasoning_tokens"):
        out["completion_tokens_details"] = {"reasoning_tokens": usage["reasoning_tokens"]}
    return out


def openai_chat_stream(body: dict[str, Any], include_usage: bool) -> bytes | None:
    """A chat completion as the chunks a stream of it would have carried; None for another kind of body."""
    if body.get("object") != "chat.completion" or not isinstance(body.get("choices"), list):
        return None
    head = {"id": body.get("id"), "object": "chat.completion.chunk"}
    head.update(created=body.get("created"), model=body.get("model"))
    if body.get("system_fingerprint") is not None:
        head["system_fingerprint"] = body["system_fingerprint"]
    out: list[bytes] = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        out.append(SSEEvent.from_json({**head, "choices": [choice]}).raw)

    for choice in body["choices"]:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or choice.get("logprobs") is not None:
            return None
        if any(value not in (None, [], "") for name, value in message.items() if name not in _CHAT_MESSAGE_KEYS):
            return None  # audio, annotations...: not rebuilt as deltas
        index = choice.get("index", 0)
        chunk(index, {"role": message.get("role", "assistant"), "content": ""})
        for name in _CHAT_DELTA_TEXT:
            if message.get(name):
                chunk(index, {name: message[name]})
        for position, call in enumerate(message.get("tool_calls") or ()):
            chunk(index, {"tool_calls": [{"index": position, **call}]})
        chunk(index, {}, choice.get("finish_reason") or "stop")
    if include_usage and isinstance(body.get("usage"), dict):
        out.append(SSEEvent.from_json({**head, "choices": [], "usage": body["usage"]}).raw)
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


_CHAT_MESSAGE_KEYS = ("role", "content", "refusal", "tool_calls")


# ---- Anthropic messages

_BLOCK_DELTAS = {"text_delta": "text", "thinking_delta": "thinking"}


class AnthropicAssembler(Assembler):
    def __init__(self) -> None:
        super().__init__()
        self.message: dict[str, Any] | None = None
        self.blocks: dict[int, dict[str, Any]] = {}
        self.partial: dict[int, str] = {}

    def _feed(self, event: SSEEvent) -> None:
        kind = event.event
        if kind == "ping":
            return
        payload = event.json()
        if not isinstance(payload, dict) or kind == "error" or payload.get("type") != kind:
            self.failed = True
            return
        if kind == "message_start":
            self.message = dict(payload["message"])
            self.message["usage"] = dict(self.message.get("usage") or {})
        elif kind == "content_block_start":
            self.blocks[payload["index"]] = dict(payload["content_block"])
        elif kind == "content_block_delta":
            self._delta(payload["index"], payload["delta"])
        elif kind == "content_block_stop":
            index = payload["index"]
            if index in self.partial:
                self.blocks[index]["input"] = orjson.loads(self.partial.pop(index) or "{}")
        elif kind == "message_delta":
            assert self.message is not None
            self.message.update(payload.get("delta") or {})
            self.message["usage"].update(payload.get("usage") or {})
        elif kind == "message_stop":
            self.done = True
        else:
            raise ValueError(f"event {kind} is not kept")

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self.blocks[index]
        kind = delta["type"]
        if kind in _BLOCK_DELTAS:
            field = _BLOCK_DELTAS[kind]
            block[field] = block.get(field, "") + delta[field]
        elif kind == "input_json_delta":
            self.partial[index] = self.partial.get(index, "") + delta["partial_json"]
        elif kind == "signature_delta":
            block["signature"] = delta["signature"]
        else:
            raise ValueError(f"delta {kind} is not kept")

    def body(self, usage: dict[str, int]) -> dict[str, Any] | None:
        if self.failed or not self.done or self.message is None or self.partial:
            return None
        return {**self.message, "content": [self.blocks[i] for i in sorted(self.blocks)]}


_START_BLOCKS = {"text": {"text": ""}, "thinking": {"thinking": "", "signature": ""}, "tool_use": {"input": {}}}


def anthropic_stream(body: dict[str, Any]) -> bytes | None:
    """A message as the events a stream of it would have carried; None for another kind of body."""
    content = body.get("content")
    if body.get("type") != "message" or not isinstance(content, list):
        return None
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    start = {**body, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": min(1, usage.get("output_tokens", 0))}  # as the API starts
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "redacted_thinking":
            events.append({"type": "content_block_start", "index": index, "content_block": block})
        elif kind in _START_BLOCKS and not block.get("citations"):
            rest = {name: value for name, value in block.items() if name not in _START_BLOCKS[kind]}
            opened = {**rest, **_START_BLOCKS[kind]}
            events.append({"type": "content_block_start", "index": index, "content_block": opened})
            events.extend({"type": "content_block_delta", "index": index, "delta": d} for d in _block_deltas(block))
        else:
            return None  # citations, server tools...: not rebuilt as deltas
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": body.get("stop_reason"), "stop_sequence": body.get("stop_sequence")}
    events.append({"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage.get("output_tokens", 0)}})
    events.append({"type": "message_stop"})
    return b"".join(SSEEvent.from_json(event, event["type"]).raw for event in events)


def _block_deltas(block: dict[str, Any]) -> list[dict[str, Any]]:
    kind = block["type"]
    if kind == "text":
        return [{"type": "text_delta", "text": block.get("text", "")}]
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")}]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return deltas
    return [{"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input", {})).decode()}]


# ---- what every adapter shares


_ID_PREFIX = re.compile(r"^[A-Za-z]+[-_]")


def fresh_body(body: dict[str, Any]) -> dict[str, Any]:
    """The body with a new id (same prefix, `chatcmpl-`, `msg_`...) and creation time, as a new answer has."""
    out = dict(body)
    if isinstance(out.get("id"), str):
        prefix = _ID_PREFIX.match(out["id"])
        out["id"] = (prefix.group(0) if prefix else "") + uuid.uuid4().hex
    for name in ("created", "created_at"):
        if isinstance(out.get(name), int):
            out[name] = int(time.time())
    return out


def plain_text(content: Any) -> str | None:
    """A turn's text when it is only text (a string, or text blocks); None when it holds anything else."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    parts = []
    for block in content:
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            return None
        if set(block) - {"type", "text", "cache_control"}:
            return None
        parts.append(block["text"])
    return "\n".join(parts)

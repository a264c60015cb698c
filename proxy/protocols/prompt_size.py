"""The size of a chat prompt as the LLM adapters read it: output caps, media parts, countable text.

Shared by the OpenAI and Anthropic adapters (their message shapes overlap: string content,
lists of typed parts or blocks, tool calls and results), so the estimates in
proxy/limits/estimate.py and the counts in proxy/accounting/tokens.py never read a body.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson

MEDIA_TYPES = frozenset({"image_url", "input_image", "image", "input_audio", "audio", "file", "input_file", "document"})
MAX_CHOICES = 128  # OpenAI's own maximum of `n`


class MessageText(NamedTuple):
    """One message as a tokenizer sees it: its texts, and how many of them are a `name` (a token of framing each)."""

    texts: list[str]
    names: int


def output_cap(body: Any, fields: tuple[str, ...], default: int, choices: bool) -> int:
    """The first non-negative integer of `fields`, else `default`; times `n` where the API has choices."""
    if not isinstance(body, dict):
        return default
    cap = default
    for field in fields:
        value = body.get(field)
        if value is not None and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            cap = value
            break
    n = body.get("n") if choices else None
    if n is not None and isinstance(n, int) and not isinstance(n, bool) and n > 1:
        cap *= min(n, MAX_CHOICES)
    return cap


def may_hold_media(raw: bytes) -> bool:
    """False when the body cannot hold a media part: none has a type without one of these words. (`find`,
    not `in`: a bytes `in` first tries its operand as an integer, and builds and drops a TypeError.)"""
    return raw.find(b"image") >= 0 or raw.find(b"audio") >= 0 or raw.find(b"file") >= 0 or raw.find(b"document") >= 0


def media_bound(raw: bytes, messages: Iterable[Mapping[str, Any]], media_part_tokens: int) -> int:
    """The body's bytes, with each media part counted as `media_part_tokens` instead of its bytes."""
    size = len(raw)
    if not may_hold_media(raw):
        return size
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") in MEDIA_TYPES:
                # orjson's compact form is never longer than the part's own bytes in the body
                size += media_part_tokens - len(orjson.dumps(part))
    return max(size, 0)


def content_text(content: Any) -> str:
    """The text of a message content in either adapter's shape: a string, parts or blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(content_text(part) for part in content)
    if isinstance(content, dict):
        for key in ("text", "input_text", "output", "arguments", "thinking"):
            value = content.get(key)
            if isinstance(value, str):
                return value
        if "content" in content:
            return content_text(content["content"])
        if isinstance(content.get("input"), dict | list):  # a tool_use block's arguments
            return orjson.dumps(content["input"]).decode()
    return ""


def message_text(message: Mapping[str, Any]) -> MessageText:
    """Content, tool calls' arguments and other string fields (role, name, ids), as OpenAI's cookbook counts."""
    texts: list[str] = []
    names = 0
    for key, value in message.items():
        if key == "content":
            texts.append(content_text(value))
        elif key == "tool_calls" and isinstance(value, list):
            texts.extend(content_text(call.get("function") or {}) for call in value if isinstance(call, dict))
        elif isinstance(value, str):
            texts.append(value)
            names += key == "name"
    return MessageText(texts, names)

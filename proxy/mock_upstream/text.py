"""Deterministic answer text and token counts, so tests can predict every byte and number."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

FILLER: tuple[str, ...] = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot",
    "golf", "hotel", "india", "juliet", "kilo", "lima",
)  # fmt: skip
ECHO_WORDS = 6
TOKENS_PER_MESSAGE = 3
TOOL_ARGS_PIECES: tuple[str, ...] = ('{"city"', ':"', "Paris", '"}')
TOOL_ARGS = "".join(TOOL_ARGS_PIECES)
TOOL_TRIGGER = "weather"


def answer_words(prompt: str, n: int) -> list[str]:
    """Exactly ``n`` words: a fixed lead-in, the prompt's first words, then filler."""
    head = ["Mock", "answer", "to:", *prompt.split()[:ECHO_WORDS]]
    filler = (FILLER[i % len(FILLER)] for i in range(max(0, n - len(head))))
    return [*head, *filler][: max(0, n)]


def word_deltas(words: list[str]) -> list[str]:
    """One streamed piece per word; joining them reproduces the non-stream text exactly."""
    return [w if i == 0 else f" {w}" for i, w in enumerate(words)]


def count_tokens(texts: Iterable[str], per_message: int = TOKENS_PER_MESSAGE) -> int:
    """A stand-in tokenizer: about four characters a token plus a fixed per-message overhead."""
    items = list(texts)
    return math.ceil(sum(len(t) for t in items) / 4) + per_message * len(items)


def content_text(content: Any) -> str:
    """Text of a message content in any of the protocols' shapes (string, parts, blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(filter(None, (_part_text(p) for p in content)))
    return ""


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return ""
    if isinstance(part.get("text"), str):
        return str(part["text"])
    if part.get("type") == "tool_result":
        return content_text(part.get("content"))
    if isinstance(part.get("output"), str):
        return str(part["output"])
    return ""


def last_user_text(messages: list[Any]) -> str:
    """The prompt the answer echoes: the last message with role "user"."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def wants_tool_call(tools: Any, user_text: str) -> bool:
    """Only a weather question with tools on offer triggers a tool call, keeping text the default."""
    return bool(tools) and isinstance(tools, list) and TOOL_TRIGGER in user_text.lower()

"""A chat conversation's structure, as the truncation stage needs it: what is kept, what goes together.

An adapter cuts its messages into turns, oldest first, so that dropping any run of the
oldest turns leaves a conversation its provider accepts: a tool call stays with all its
results (parallel calls included), a result never outlives its call, and only a turn that
`leads` may become the first one. System and developer messages are `pinned`: always kept.
The trimming itself (proxy/truncation/trim.py) knows none of this; it reads these groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Turn:
    """Messages (indices into the request's `messages`) kept or dropped together."""

    indices: tuple[int, ...]
    leads: bool
    """Whether the conversation may start with this turn."""


@dataclass(frozen=True, slots=True)
class Conversation:
    pinned: tuple[int, ...]
    turns: tuple[Turn, ...]


class _Builder:
    def __init__(self) -> None:
        self.pinned: list[int] = []
        self.turns: list[tuple[list[int], bool]] = []

    def start(self, index: int, leads: bool) -> None:
        self.turns.append(([index], leads))

    def join(self, index: int, turn: int | None = None) -> None:
        """Into the given turn (default: the latest); a message before any turn starts one that cannot lead."""
        if not self.turns:
            self.start(index, False)
        else:
            self.turns[-1 if turn is None else turn][0].append(index)

    def build(self) -> Conversation:
        return Conversation(tuple(self.pinned), tuple(Turn(tuple(sorted(i)), leads) for i, leads in self.turns))


def _dict_messages(body: Any) -> list[dict[str, Any]] | None:
    """The `messages` list when every entry is an object; None for anything else (left alone)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return None
    return messages


def openai_chat(body: Any) -> Conversation | None:
    """Chat completions: a turn starts at each user message and at each assistant message with tool calls.

    `tool` (and legacy `function`) messages join the turn of the call they answer, found by
    `tool_call_id`, else the latest turn; a plain assistant reply stays with what it answers.
    OpenAI accepts a conversation that starts with an assistant message, so every turn leads
    (a result is never first: it always belongs to an earlier turn).
    """
    messages = _dict_messages(body)
    if messages is None:
        return None
    conv = _Builder()
    call_turn: dict[Any, int] = {}
    for index, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            conv.pinned.append(index)
        elif role == "user":
            conv.start(index, True)
        elif role == "assistant" and message.get("tool_calls"):
            conv.start(index, True)
            calls = message["tool_calls"]
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    call_turn[call["id"]] = len(conv.turns) - 1
        elif role in ("tool", "function"):
            conv.join(index, call_turn.get(message.get("tool_call_id")))
        else:
            conv.join(index)
    return conv.build()


def _has_tool_result(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    )


def anthropic_messages(body: Any) -> Conversation | None:
    """Messages: a turn starts at each user message that carries no `tool_result` block.

    The API refuses a conversation whose first message is not the user's, and a
    `tool_result` must answer a `tool_use` of the assistant message just before it, so an
    assistant message and the user's tool results stay in the turn they continue (a long
    tool loop inside one user turn is kept or dropped whole). The system prompt is the
    top-level `system`, outside the messages: always kept.
    """
    messages = _dict_messages(body)
    if messages is None:
        return None
    conv = _Builder()
    for index, message in enumerate(messages):
        if message.get("role") == "user" and not _has_tool_result(message):
            conv.start(index, True)
        else:
            conv.join(index)
    return conv.build()


def with_messages(body: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    """The body with only the messages at `keep` (in order); every other field as it was."""
    messages = body["messages"]
    return {**body, "messages": [messages[i] for i in keep]}

"""The usual request and answer, read in one pass: a chat of plain-text messages, an answer of one text.

Most requests are a chat whose every message holds a string, and most answers one text.
For those, input checks and redaction need only the strings, not the general walks of
shape.py and text_slots.py (each a few thousand instructions per request). These
functions give them in one pass over the parsed JSON, or None for anything else, and the
caller then takes the general way. What they claim is held to those walks by tests
(tests/unit/test_plain_texts.py): a prompt returned here has no shape problem and its
texts are its text slots' values, in order; an answer's text is the value of its one
slot, a `text` slot.
"""

from __future__ import annotations

from typing import Any

# The roles of shape.py's OPENAI_ROLES that need nothing beside a string content (`tool` needs a tool_call_id),
# the most frequent first: a tuple is searched by equality, so a role of any type is only "not there".
_OPENAI_ROLES = ("user", "assistant", "system", "developer", "function")
_ANTHROPIC_ROLES = ("user", "assistant")


def _chat_messages(body: Any) -> list[Any] | None:
    """The messages of a chat request that names its model and whose `stream`, if given, is a boolean."""
    if type(body) is not dict:
        return None
    messages = body.get("messages")
    model = body.get("model")
    if type(messages) is not list or not messages or type(model) is not str or not model.strip():
        return None
    if "stream" in body and type(body["stream"]) is not bool:
        return None
    return messages


def _plain_texts(messages: list[Any], roles: tuple[str, ...], texts: list[str]) -> list[str] | None:
    """`texts` plus each message's string content, or None at a message of another role, content or any call."""
    for message in messages:
        if type(message) is not dict:
            return None
        content = message.get("content")
        if type(content) is not str or message.get("role") not in roles:
            return None
        if "tool_calls" in message or "function_call" in message:
            return None
        texts.append(content)
    return texts


def openai_prompt(body: Any) -> list[str] | None:
    """A chat completion request whose messages are all plain text: their contents; None for any other body."""
    messages = _chat_messages(body)
    if messages is None or "instructions" in body or "input" in body or "prompt" in body:
        return None
    return _plain_texts(messages, _OPENAI_ROLES, [])


def openai_answer(body: Any) -> str | None:
    """A chat completion of one choice whose message is only text (no refusal, no calls): that text."""
    if type(body) is not dict or "output" in body:
        return None
    choices = body.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    message = choice.get("message") if type(choice) is dict else None
    if type(message) is not dict or "tool_calls" in message or "function_call" in message:
        return None
    content = message.get("content")
    if type(content) is not str or type(message.get("refusal")) is str:
        return None
    return content


def anthropic_prompt(body: Any) -> list[str] | None:
    """A messages request with a string system prompt (or none) and messages of plain text: those texts."""
    messages = _chat_messages(body)
    if messages is None:
        return None
    tokens = body.get("max_tokens")
    if type(tokens) is not int or tokens < 1:
        return None
    texts: list[str] = []
    if "system" in body:
        system = body["system"]
        if type(system) is not str:
            return None
        texts.append(system)
    return _plain_texts(messages, _ANTHROPIC_ROLES, texts)


def anthropic_answer(body: Any) -> str | None:
    """A message whose content is one block with a string `text`: that text."""
    content = body.get("content") if type(body) is dict else None
    if type(content) is not list or len(content) != 1:
        return None
    block = content[0]
    text = block.get("text") if type(block) is dict else None
    return text if type(text) is str else None

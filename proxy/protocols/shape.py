"""Is a request body shaped like the API it is sent to? The first problem, in words a developer can act on.

Only the structure the proxy and the provider both rely on is checked (model, messages,
roles, content parts); unknown fields pass, so new provider features keep working.
"""

from __future__ import annotations

from typing import Any

OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
ANTHROPIC_ROLES = ("user", "assistant")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value[:32] + ("..." if len(value) > 32 else ""))
    return type(value).__name__ if value is not None else "null"


def _model(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        return "`model` must be a non-empty string"
    return None


def _parts(content: Any, where: str, allow_null: bool) -> str | None:
    if isinstance(content, str) or (content is None and allow_null):
        return None
    if not isinstance(content, list):
        return f"{where} must be a string or a list of content parts (got {_show(content)})"
    for i, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            return f"{where}[{i}] must be an object with a string `type`"
    return None


def _openai_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "`messages` must be a non-empty list"
    for i, message in enumerate(messages):
        # The message's place (`messages[i]`) is formatted only for a problem: a clean conversation is most.
        if not isinstance(message, dict):
            return f"messages[{i}] must be an object"
        role = message.get("role")
        if role not in OPENAI_ROLES:
            return f"messages[{i}].role must be one of {', '.join(OPENAI_ROLES)} (got {_show(role)})"
        content = message.get("content")
        if not isinstance(content, str) and (
            problem := _parts(content, f"messages[{i}].content", allow_null=role in ("assistant", "function"))
        ):
            return problem
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            return f"messages[{i}].tool_call_id must be a string for a tool message"
        calls = message.get("tool_calls")
        if calls is not None:
            where = f"messages[{i}]"
            if not isinstance(calls, list):
                return f"{where}.tool_calls must be a list"
            for j, call in enumerate(calls):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    return f"{where}.tool_calls[{j}].function must be an object with a string `name`"
                if not isinstance(function.get("arguments", ""), str):
                    return f"{where}.tool_calls[{j}].function.arguments must be a string of JSON"
    return None


def openai_shape_problem(body: dict[str, Any], path: str) -> str | None:
    if "stream" in body and not isinstance(body["stream"], bool):
        return "`stream` must be true or false"
    if "messages" in body or path.endswith("/chat/completions"):
        return _model(body) or _openai_messages(body.get("messages"))
    if path.endswith("/responses"):
        items = body.get("input")
        if not isinstance(items, str | list):
            return "`input` must be a string or a list of input items"
        if isinstance(items, list):
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    return f"input[{i}] must be an object"
                if "role" in item and (problem := _parts(item.get("content"), f"input[{i}].content", False)):
                    return problem
        return _model(body)
    if path.endswith("/completions"):
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list):
            return "`prompt` must be a string or a list"
        return _model(body)
    return None


def anthropic_shape_problem(body: dict[str, Any], path: str) -> str | None:
    if not path.rstrip("/").endswith(("/messages", "/count_tokens")):
        return None
    if problem := _model(body):
        return problem
    if path.rstrip("/").endswith("/messages"):
        tokens = body.get("max_tokens")
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            return "`max_tokens` must be a positive integer"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "`stream` must be true or false"
    if "system" in body and (problem := _parts(body["system"], "system", allow_null=False)):
        return problem
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "`messages` must be a non-empty list"
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return f"{where} must be an object"
        role = message.get("role")
        if role not in ANTHROPIC_ROLES:
            return f"{where}.role must be one of {', '.join(ANTHROPIC_ROLES)} (got {_show(role)})"
        if problem := _parts(message.get("content"), f"{where}.content", allow_null=False):
            return problem
    return None

"""Where the functions are: tool calls an LLM proposes in answers, and the tools a request offers.

The adapters (openai.py, anthropic.py) read through these. A streamed call arrives in parts;
each part names the call it belongs to by a `key` (a choice and call index, an output item, a
content block), so a stage can hold a call's parts until its function name is known. A
`CallPart` carries the name when its event does: whole (Anthropic's `content_block_start`,
the Responses API's items) or as a piece the SDKs append to what came before (chat deltas).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CallKey = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class CallPart:
    key: CallKey
    name: str | None = None  # None: this part continues a call whose name came (or comes) in another event
    piece: bool = False  # the name is a piece appended to the ones before (chat deltas), not the whole name


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)] if isinstance(value, list) else []


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _call_function(call: dict[str, Any]) -> dict[str, Any] | None:
    """A chat tool call's function (`type: function`) or custom tool (`type: custom`)."""
    return _dict(call.get("function")) or _dict(call.get("custom"))


# ---- OpenAI ------------------------------------------------------------------------------------------------------

_RESPONSES_CALLS = ("function_call", "custom_tool_call")


def openai_body_calls(body: Any) -> list[str]:
    """Function names of a chat completion (`tool_calls`, legacy `function_call`) or a Responses API answer."""
    body = _dict(body)
    if body is None:
        return []
    names: list[str] = []
    for _, choice in _items(body.get("choices")):
        message = _dict(choice.get("message")) or {}
        for _, call in _items(message.get("tool_calls")):
            function = _call_function(call)
            names.append(_name(function.get("name")) or "" if function else "")
        legacy = _dict(message.get("function_call"))
        if legacy is not None:
            names.append(_name(legacy.get("name")) or "")
    for _, item in _items(body.get("output")):
        if item.get("type") in _RESPONSES_CALLS:
            names.append(_name(item.get("name")) or "")
    return names


def openai_event_calls(payload: Any) -> list[CallPart]:
    payload = _dict(payload)
    if payload is None:
        return []
    kind = payload.get("type")
    if isinstance(kind, str) and kind.startswith("response."):
        return _responses_event_calls(kind, payload)
    parts: list[CallPart] = []
    for p, choice in _items(payload.get("choices")):
        index = choice.get("index", p)
        delta = _dict(choice.get("delta")) or {}
        for q, call in _items(delta.get("tool_calls")):
            function = _call_function(call) or {}
            key = ("choice", index, "tool", call.get("index", q))
            parts.append(CallPart(key, _name(function.get("name")), piece=True))
        legacy = _dict(delta.get("function_call"))
        if legacy is not None:
            parts.append(CallPart(("choice", index, "function"), _name(legacy.get("name")), piece=True))
    return parts


def _responses_event_calls(kind: str, payload: dict[str, Any]) -> list[CallPart]:
    if kind in ("response.function_call_arguments.delta", "response.function_call_arguments.done"):
        return [CallPart(("resp", payload.get("output_index")), _name(payload.get("name")))]
    if kind in ("response.custom_tool_call_input.delta", "response.custom_tool_call_input.done"):
        return [CallPart(("resp", payload.get("output_index")))]
    item = _dict(payload.get("item"))
    if item is not None:
        if item.get("type") not in _RESPONSES_CALLS:
            return []
        return [CallPart(("resp", payload.get("output_index")), _name(item.get("name")) or "")]
    response = _dict(payload.get("response"))
    if response is not None:
        return [
            CallPart(("resp", k), _name(item.get("name")) or "")
            for k, item in _items(response.get("output"))
            if item.get("type") in _RESPONSES_CALLS
        ]
    return []


def openai_filter_tools(body: Any, allowed: Callable[[str], bool]) -> tuple[dict[str, Any] | None, list[str]]:
    """The request offering only allowed functions (`tools`, legacy `functions`), and the names removed.

    Built-in tools the provider runs itself (web search, file search...) are not functions and stay.
    """
    body = _dict(body)
    if body is None:
        return None, []
    removed: list[str] = []
    new = dict(body)
    tools = body.get("tools")
    if isinstance(tools, list):
        kept = []
        for tool in tools:
            name = _openai_tool_name(tool)
            if name is None or allowed(name):
                kept.append(tool)
            else:
                removed.append(name)
        _set_or_drop(new, "tools", kept, ("tool_choice", "parallel_tool_calls"))
    functions = body.get("functions")
    if isinstance(functions, list):
        kept = []
        for function in functions:
            name = _name(function.get("name")) if isinstance(function, dict) else None
            if name is None or allowed(name):
                kept.append(function)
            else:
                removed.append(name)
        _set_or_drop(new, "functions", kept, ("function_call",))
    return (new if removed else None), removed


def _openai_tool_name(tool: Any) -> str | None:
    """A function or custom tool's name (chat nests it, the Responses API does not); None for built-in tools."""
    if not isinstance(tool, dict) or tool.get("type") not in ("function", "custom"):
        return None
    inner = _dict(tool.get(tool["type"])) or tool
    return _name(inner.get("name"))


def openai_forced_function(body: Any) -> str | None:
    """The function a request forces with `tool_choice` or legacy `function_call`, if any."""
    body = _dict(body) or {}
    choice = _dict(body.get("tool_choice"))
    if choice is not None:
        inner = _dict(choice.get("function")) or _dict(choice.get("custom")) or choice
        return _name(inner.get("name"))
    legacy = _dict(body.get("function_call"))
    return _name(legacy.get("name")) if legacy is not None else None


# ---- Anthropic ---------------------------------------------------------------------------------------------------


def anthropic_body_calls(body: Any) -> list[str]:
    body = _dict(body)
    if body is None:
        return []
    return [
        _name(block.get("name")) or "" for _, block in _items(body.get("content")) if block.get("type") == "tool_use"
    ]


def anthropic_event_calls(payload: Any, event: str | None) -> list[CallPart]:
    payload = _dict(payload)
    if payload is None:
        return []
    key = ("block", payload.get("index"))
    if event == "content_block_start":
        block = _dict(payload.get("content_block")) or {}
        return [CallPart(key, _name(block.get("name")) or "")] if block.get("type") == "tool_use" else []
    if event == "content_block_delta":
        delta = _dict(payload.get("delta")) or {}
        return [CallPart(key)] if delta.get("type") == "input_json_delta" else []
    if event == "message_start":  # empty from the API, but the SDKs take what it holds as the message so far
        message = _dict(payload.get("message")) or {}
        return [CallPart(("start", i), name) for i, name in enumerate(anthropic_body_calls(message))]
    return []


def anthropic_filter_tools(body: Any, allowed: Callable[[str], bool]) -> tuple[dict[str, Any] | None, list[str]]:
    """Client tools (no `type`, or `custom`) the caller may not use removed; server tools stay."""
    body = _dict(body)
    if body is None or not isinstance(body.get("tools"), list):
        return None, []
    kept, removed = [], []
    for tool in body["tools"]:
        name = _name(tool.get("name")) if isinstance(tool, dict) and tool.get("type", "custom") == "custom" else None
        if name is None or allowed(name):
            kept.append(tool)
        else:
            removed.append(name)
    if not removed:
        return None, []
    new = dict(body)
    _set_or_drop(new, "tools", kept, ("tool_choice",))
    return new, removed


def anthropic_forced_function(body: Any) -> str | None:
    choice = _dict((_dict(body) or {}).get("tool_choice"))
    return _name(choice.get("name")) if choice is not None and choice.get("type") == "tool" else None


def _set_or_drop(body: dict[str, Any], key: str, kept: list[Any], companions: tuple[str, ...]) -> None:
    """An empty list is refused by the APIs, and so are the options that only make sense with it."""
    if kept:
        body[key] = kept
        return
    body.pop(key, None)
    for companion in companions:
        body.pop(companion, None)

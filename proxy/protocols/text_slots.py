"""Where the text is: paths to the strings a caller reads (responses, events) or sends (prompts).

A `TextSlot` names one place in a parsed payload by its path, what it holds (`text`,
`json` text such as tool-call arguments, or a parsed JSON `value` such as a tool_use
input), and, for a streamed delta, the `channel` it continues: one per choice, tool
call or content block, so text split over several events is read as one. The adapters
(openai.py, anthropic.py) build these; stages read and rewrite payloads through them.
An event's slots and the channels it closes follow from its structure and the types of its
strings, never from a text slot's value: proxy/safety/event_shape.py relies on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Path = tuple[str | int, ...]
Channel = tuple[Any, ...]
SlotKind = Literal["text", "json", "value"]


@dataclass(frozen=True, slots=True)
class TextSlot:
    path: Path
    kind: SlotKind = "text"
    channel: Channel | None = None  # None: the slot holds a whole text, not a delta

    def get(self, payload: Any) -> Any:
        for key in self.path:
            payload = payload[key]
        return payload

    def set(self, payload: Any, value: Any) -> Any:
        """Returns the payload, which is `value` itself for the root slot."""
        if not self.path:
            return value
        target = payload
        for key in self.path[:-1]:
            target = target[key]
        target[self.path[-1]] = value
        return payload

    @property
    def key(self) -> str | None:
        """The object key the slot's value sits under, if it sits under one."""
        last = self.path[-1] if self.path else None
        return last if isinstance(last, str) else None

    def under(self, *prefix: str | int) -> TextSlot:
        return TextSlot((*prefix, *self.path), self.kind, self.channel)


ROOT_VALUE = TextSlot((), "value")


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    """A plain loop: a list comprehension is a function of its own, a quarter more instructions on a short list."""
    out: list[tuple[int, dict[str, Any]]] = []
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                out.append((i, item))
    return out


def content_slots(content: Any, path: Path) -> list[TextSlot]:
    """A message content: a string, or parts/blocks with `text` (tool results and tool_use inputs too)."""
    if isinstance(content, str):
        return [TextSlot(path)]
    slots: list[TextSlot] = []
    for i, part in _items(content):
        if isinstance(part.get("text"), str):
            slots.append(TextSlot((*path, i, "text")))
        elif part.get("type") == "tool_result":
            slots.extend(content_slots(part.get("content"), (*path, i, "content")))
        elif part.get("type") == "tool_use" and "input" in part:
            slots.append(TextSlot((*path, i, "input"), "value"))
        elif part.get("type") == "function_call" and isinstance(part.get("arguments"), str):
            slots.append(TextSlot((*path, i, "arguments"), "json"))
        elif part.get("type") == "function_call_output" and isinstance(part.get("output"), str):
            slots.append(TextSlot((*path, i, "output")))
    return slots


def item_slots(item: dict[str, Any], path: Path) -> list[TextSlot]:
    """The slots of one part or block, at `path`."""
    return [TextSlot((*path, *slot.path[1:]), slot.kind) for slot in content_slots([item], ())]


# ---- OpenAI ------------------------------------------------------------------------------------------------------


_MESSAGE_CONTENT = tuple(TextSlot(("messages", i, "content")) for i in range(64))  # a chat's first 64, made once


def openai_request(body: Any) -> list[TextSlot]:
    body = _dict(body)
    if body is None:
        return []
    slots: list[TextSlot] = []
    if isinstance(body.get("instructions"), str):
        slots.append(TextSlot(("instructions",)))
    for i, message in _items(body.get("messages")):
        content = message.get("content")
        if isinstance(content, str) and i < len(_MESSAGE_CONTENT):
            slots.append(_MESSAGE_CONTENT[i])
        else:
            slots.extend(content_slots(content, ("messages", i, "content")))
        if "tool_calls" in message:  # asked before the walk: most messages have neither
            for j, call in _items(message["tool_calls"]):
                function = _dict(call.get("function"))
                if function is not None and isinstance(function.get("arguments"), str):
                    slots.append(TextSlot(("messages", i, "tool_calls", j, "function", "arguments"), "json"))
        if "function_call" in message:
            function = _dict(message["function_call"])
            if function is not None and isinstance(function.get("arguments"), str):
                slots.append(TextSlot(("messages", i, "function_call", "arguments"), "json"))
    for key in ("input", "prompt"):  # Responses input, legacy prompt, embeddings input
        value = body.get(key)
        if isinstance(value, str):
            slots.append(TextSlot((key,)))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    slots.append(TextSlot((key, i)))
                elif isinstance(item, dict):
                    if "content" in item:
                        slots.extend(content_slots(item["content"], (key, i, "content")))
                    else:
                        slots.extend(item_slots(item, (key, i)))
    return slots


def _openai_output_item(item: dict[str, Any], path: Path) -> list[TextSlot]:
    if item.get("type") == "function_call" and isinstance(item.get("arguments"), str):
        return [TextSlot((*path, "arguments"), "json")]
    return [
        TextSlot((*path, "content", j, "text"))
        for j, part in _items(item.get("content"))
        if isinstance(part.get("text"), str)
    ]


_MESSAGE_SLOTS = {  # the usual message slots, made once
    (i, key): TextSlot(("choices", i, "message", key)) for i in range(8) for key in ("content", "refusal")
}


def openai_response(body: Any) -> list[TextSlot]:
    body = _dict(body)
    if body is None:
        return []
    slots: list[TextSlot] = []
    for i, choice in _items(body.get("choices")):
        message = _dict(choice.get("message"))
        if message is None:
            if isinstance(choice.get("text"), str):
                slots.append(TextSlot(("choices", i, "text")))
            continue
        for key in ("content", "refusal"):
            if isinstance(message.get(key), str):
                slots.append(_MESSAGE_SLOTS[i, key] if i < 8 else TextSlot(("choices", i, "message", key)))
        if "tool_calls" in message:  # asked before the walk: most answers have neither
            for j, call in _items(message["tool_calls"]):
                function = _dict(call.get("function"))
                if function is not None and isinstance(function.get("arguments"), str):
                    slots.append(TextSlot(("choices", i, "message", "tool_calls", j, "function", "arguments"), "json"))
        if "function_call" in message:
            function = _dict(message["function_call"])
            if function is not None and isinstance(function.get("arguments"), str):
                slots.append(TextSlot(("choices", i, "message", "function_call", "arguments"), "json"))
    if "output" in body:  # Responses API
        for k, item in _items(body["output"]):
            slots.extend(_openai_output_item(item, ("output", k)))
    return slots


_DELTA_SLOTS = {
    (p, key): TextSlot(("choices", p, "delta", key), "text", ("choice", p, key))
    for p in range(8)
    for key in ("content", "refusal")
}


def _delta_slot(p: int, index: Any, key: str) -> TextSlot:
    """A chat delta's slot; the usual ones (a choice's index is its position, one of the first 8) are made once."""
    if type(index) is int and index == p and p < 8:
        return _DELTA_SLOTS[p, key]
    return TextSlot(("choices", p, "delta", key), "text", ("choice", index, key))


def openai_event(payload: Any) -> list[TextSlot]:
    payload = _dict(payload)
    if payload is None:
        return []
    kind = payload.get("type")
    if isinstance(kind, str) and kind.startswith("response."):
        return _responses_event(kind, payload)
    choices = payload.get("choices")
    if type(choices) is list and len(choices) == 1:  # the usual chunk: one choice whose delta is only text
        choice = choices[0]
        delta = choice.get("delta") if type(choice) is dict else None
        if type(delta) is dict and len(delta) == 1 and type(delta.get("content")) is str:
            return [_delta_slot(0, choice.get("index", 0), "content")]
    slots: list[TextSlot] = []
    for p, choice in _items(choices):
        index = choice.get("index", p)
        delta = _dict(choice.get("delta"))
        if delta is None:
            if isinstance(choice.get("text"), str):  # legacy completions
                slots.append(TextSlot(("choices", p, "text"), "text", ("choice", index, "content")))
            continue
        for key in ("content", "refusal"):
            if isinstance(delta.get(key), str):
                slots.append(_delta_slot(p, index, key))
        for q, call in _items(delta.get("tool_calls")):
            function = _dict(call.get("function"))
            if function is not None and isinstance(function.get("arguments"), str):
                path = ("choices", p, "delta", "tool_calls", q, "function", "arguments")
                slots.append(TextSlot(path, "json", ("choice", index, "tool", call.get("index", q))))
        function = _dict(delta.get("function_call"))
        if function is not None and isinstance(function.get("arguments"), str):
            path = ("choices", p, "delta", "function_call", "arguments")
            slots.append(TextSlot(path, "json", ("choice", index, "function")))
    return slots


def _responses_event(kind: str, payload: dict[str, Any]) -> list[TextSlot]:
    output, content = payload.get("output_index"), payload.get("content_index")
    if kind == "response.output_text.delta" and isinstance(payload.get("delta"), str):
        return [TextSlot(("delta",), "text", ("resp", output, content))]
    if kind == "response.function_call_arguments.delta" and isinstance(payload.get("delta"), str):
        return [TextSlot(("delta",), "json", ("resp", output, "args"))]
    if kind == "response.output_text.done" and isinstance(payload.get("text"), str):
        return [TextSlot(("text",))]
    if kind == "response.function_call_arguments.done" and isinstance(payload.get("arguments"), str):
        return [TextSlot(("arguments",), "json")]
    part = _dict(payload.get("part"))
    if part is not None and isinstance(part.get("text"), str):
        return [TextSlot(("part", "text"))]
    item = _dict(payload.get("item"))
    if item is not None:
        return [s.under("item") for s in _openai_output_item(item, ())]
    response = _dict(payload.get("response"))
    if response is not None:
        return [s.under("response") for s in openai_response(response)]
    return []


def openai_closes(payload: Any, data: str | None) -> tuple[Channel, ...]:
    """Channels whose text ends before this event; `()` is every channel."""
    if data == "[DONE]":
        return ((),)
    payload = _dict(payload)
    if payload is None:
        return ()
    kind = payload.get("type")
    if isinstance(kind, str):
        output = payload.get("output_index")
        if kind in ("response.output_text.done", "response.content_part.done"):
            return (("resp", output, payload.get("content_index")),)
        if kind == "response.function_call_arguments.done":
            return (("resp", output, "args"),)
        if kind == "response.output_item.done":
            return (("resp", output),)
        if kind in ("response.completed", "response.incomplete", "response.failed", "error"):
            return ((),)
    choices = payload.get("choices")
    if type(choices) is list and len(choices) == 1 and type(choices[0]) is dict and not choices[0].get("finish_reason"):
        return ()  # the usual chunk: one choice, going on
    return tuple(("choice", choice.get("index", p)) for p, choice in _items(choices) if choice.get("finish_reason"))


def openai_continuation(template: dict[str, Any], slot: TextSlot, text: str) -> dict[str, Any]:
    """A payload like the channel's last event, carrying only `text` for that channel."""
    channel = slot.channel or ()
    if channel and channel[0] == "resp":
        return {**template, "delta": text} | ({"logprobs": []} if "logprobs" in template else {})
    base = {key: value for key, value in template.items() if key not in ("choices", "usage")}
    index = channel[1]
    if slot.path[-1] == "text" and "delta" not in slot.path:  # legacy completions
        choice: dict[str, Any] = {"index": index, "text": text, "logprobs": None, "finish_reason": None}
    elif channel[2] == "tool":
        call = {"index": channel[3], "function": {"arguments": text}}
        choice = {"index": index, "delta": {"tool_calls": [call]}, "logprobs": None, "finish_reason": None}
    elif channel[2] == "function":
        choice = {"index": index, "delta": {"function_call": {"arguments": text}}, "finish_reason": None}
    else:  # content or refusal
        choice = {"index": index, "delta": {channel[2]: text}, "logprobs": None, "finish_reason": None}
    return {**base, "choices": [choice]}


# ---- Anthropic ---------------------------------------------------------------------------------------------------


def anthropic_request(body: Any) -> list[TextSlot]:
    body = _dict(body)
    if body is None:
        return []
    slots = content_slots(body.get("system"), ("system",)) if "system" in body else []
    for i, message in _items(body.get("messages")):
        content = message.get("content")
        if isinstance(content, str) and i < len(_MESSAGE_CONTENT):
            slots.append(_MESSAGE_CONTENT[i])
        else:
            slots.extend(content_slots(content, ("messages", i, "content")))
    return slots


def anthropic_response(body: Any) -> list[TextSlot]:
    body = _dict(body)
    return content_slots(body.get("content"), ("content",)) if body is not None and "content" in body else []


def anthropic_event(payload: Any, event: str | None) -> list[TextSlot]:
    payload = _dict(payload)
    if payload is None:
        return []
    if event == "content_block_delta":
        delta = _dict(payload.get("delta")) or {}
        channel = ("block", payload.get("index"))
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            return [TextSlot(("delta", "text"), "text", channel)]
        if delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            return [TextSlot(("delta", "partial_json"), "json", channel)]
        return []
    if event == "content_block_start" and isinstance(payload.get("content_block"), dict):
        return item_slots(payload["content_block"], ("content_block",))
    if event == "message_start" and isinstance(payload.get("message"), dict):
        return [s.under("message") for s in anthropic_response(payload["message"])]
    return []


def anthropic_closes(payload: Any, event: str | None) -> tuple[Channel, ...]:
    if event == "content_block_stop":
        index = payload.get("index") if isinstance(payload, dict) else None
        return (("block", index),)
    if event in ("message_delta", "message_stop", "error"):
        return ((),)
    return ()


def anthropic_continuation(template: dict[str, Any], slot: TextSlot, text: str) -> dict[str, Any]:
    delta = template.get("delta") or {}
    key = "partial_json" if slot.kind == "json" else "text"
    return {
        "type": "content_block_delta",
        "index": template.get("index"),
        "delta": {"type": delta.get("type"), key: text},
    }

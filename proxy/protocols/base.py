"""What a stage may ask of a wire format, without speaking it.

A `Protocol` reads the model, the messages, the text of a streamed delta and the
usage from requests, bodies and events, and builds errors in its own shape. Adding a
provider means adding one adapter; stages stay format-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from proxy.errors import ProxyError
from proxy.protocols import prompt_size
from proxy.protocols.cached import Assembler, fresh_body, plain_text
from proxy.protocols.conversation import Conversation, with_messages
from proxy.protocols.prompt_size import MessageText
from proxy.protocols.sse import SSEEvent
from proxy.protocols.text_slots import ROOT_VALUE, Channel, TextSlot
from proxy.protocols.tool_calls import CallPart

MAX_REPORTED_TOKENS = 100_000_000
"""The largest token count an upstream may report for one request; larger is not believed."""
OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
"""The fields a request caps its output with (chat, legacy completions, Responses)."""
COUNTS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")


@dataclass(slots=True)
class Usage:
    """Token counts by kind; None means the upstream did not say.

    Input kinds are disjoint, whatever the provider's convention: `input_tokens` are the
    uncached prompt tokens, `cached_input_tokens` the ones read from a prompt cache and
    `cache_write_tokens` the ones written to it (OpenAI's `prompt_tokens` includes its
    cached tokens; the adapter subtracts them). `reasoning_tokens` are part of `output_tokens`.
    `rejected` names the counts an upstream reported that were not believable (see `reported`).
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    rejected: tuple[str, ...] = ()

    def update(self, other: Usage) -> None:
        """Later reports win field by field (Anthropic sends input first, output last).

        A later report that was rejected clears the field, so it is estimated rather than
        left at an earlier placeholder (Anthropic's first output count is 1).
        """
        # Spelled out (every field of COUNTS): twice as fast as getattr/setattr by name, on every response.
        if other.input_tokens is not None:
            self.input_tokens = other.input_tokens
        if other.output_tokens is not None:
            self.output_tokens = other.output_tokens
        if other.cached_input_tokens is not None:
            self.cached_input_tokens = other.cached_input_tokens
        if other.cache_write_tokens is not None:
            self.cache_write_tokens = other.cache_write_tokens
        if other.reasoning_tokens is not None:
            self.reasoning_tokens = other.reasoning_tokens
        if other.rejected:
            for name in other.rejected:
                setattr(self, name, None)
            self.rejected = (*self.rejected, *(n for n in other.rejected if n not in self.rejected))

    def counts(self) -> dict[str, int]:
        """The counts that are known, by name."""
        counts = {}  # in the order of COUNTS, spelled out as in `update`
        if self.input_tokens is not None:
            counts["input_tokens"] = self.input_tokens
        if self.output_tokens is not None:
            counts["output_tokens"] = self.output_tokens
        if self.cached_input_tokens is not None:
            counts["cached_input_tokens"] = self.cached_input_tokens
        if self.cache_write_tokens is not None:
            counts["cache_write_tokens"] = self.cache_write_tokens
        if self.reasoning_tokens is not None:
            counts["reasoning_tokens"] = self.reasoning_tokens
        return counts

    @property
    def known(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None

    @property
    def total_tokens(self) -> int:
        """Every token the request consumed: all input kinds plus output."""
        return (
            (self.input_tokens or 0)
            + (self.cached_input_tokens or 0)
            + (self.cache_write_tokens or 0)
            + (self.output_tokens or 0)
        )


def believable(value: Any) -> bool:
    """A JSON integer from 0 to MAX_REPORTED_TOKENS: anything else (huge, negative, fractional, a string) is not."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REPORTED_TOKENS


def reported(**raw: Any) -> Usage:
    """Usage from an upstream's raw values, which are untrusted input.

    A missing (None) value is not reported; an unbelievable one is treated the same way
    and its name goes to `rejected`, so the usage stage estimates it and says so.
    """
    usage = Usage()
    rejected = []
    for name, value in raw.items():
        if value is None:
            continue
        if believable(value):
            setattr(usage, name, value)
        else:
            rejected.append(name)
    if rejected:
        usage.rejected = tuple(rejected)
    return usage


def reported_counts(
    input_tokens: Any, output_tokens: Any, cached_input_tokens: Any, cache_write_tokens: Any, reasoning_tokens: Any
) -> Usage:
    """`reported` positionally, in the order of COUNTS: what the adapters call on every answer. When every value
    is None or an exact int in range (what an upstream's JSON holds), that is the Usage, without `reported`'s
    keyword call and its loop; anything else takes `reported` itself."""
    if (
        (input_tokens is None or (input_tokens.__class__ is int and 0 <= input_tokens <= MAX_REPORTED_TOKENS))
        and (output_tokens is None or (output_tokens.__class__ is int and 0 <= output_tokens <= MAX_REPORTED_TOKENS))
        and (
            cached_input_tokens is None
            or (cached_input_tokens.__class__ is int and 0 <= cached_input_tokens <= MAX_REPORTED_TOKENS)
        )
        and (
            cache_write_tokens is None
            or (cache_write_tokens.__class__ is int and 0 <= cache_write_tokens <= MAX_REPORTED_TOKENS)
        )
        and (
            reasoning_tokens is None
            or (reasoning_tokens.__class__ is int and 0 <= reasoning_tokens <= MAX_REPORTED_TOKENS)
        )
    ):
        return Usage(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens)
    return reported(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached_input_tokens,
        cache_write_tokens=cache_write_tokens,
        reasoning_tokens=reasoning_tokens,
    )


class Protocol:
    """Pass-through defaults: a plain HTTP body has no model, messages or usage."""

    name: ClassVar[str] = "http"
    parses_json: ClassVar[bool] = False
    """Whether request bodies on this protocol are JSON the proxy parses and checks."""

    def with_model(self, body: Any, model: str) -> Any | None:
        """The request body naming `model` instead (fallbacks), or None when it names it already or has no model."""
        if not isinstance(body, dict) or body.get("model") == model:
            return None
        return {**body, "model": model}

    def assistant_answer(self, request_id: str, model: str, text: str, stream: bool) -> bytes | None:
        """A whole assistant turn saying `text` (degraded replies); None where the protocol has no chat shape."""
        return None

    def error_payload(self, err: ProxyError) -> dict[str, Any]:
        return {"error": {"message": err.message, "type": err.kind, "code": err.code}}

    def error_body(self, err: ProxyError) -> bytes:
        return orjson.dumps(self.error_payload(err))

    def stream_error_event(self, err: ProxyError) -> SSEEvent:
        """How a stream ends when the upstream fails after the first byte went out."""
        return SSEEvent.from_json(self.error_payload(err), event="error")

    def request_model(self, body: Any) -> str | None:
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None

    def request_messages(self, body: Any) -> list[dict[str, Any]]:
        return []

    def chat_messages(self, body: Any) -> list[Any] | None:
        """A chat request's `messages` as sent (indices as the caller gave them); None for other requests."""
        if not self.parses_json or not isinstance(body, dict):
            return None
        messages = body.get("messages")
        return messages if isinstance(messages, list) else None

    def system_prompt(self, body: Any) -> str | list[Any] | None:
        """Instructions given outside the messages (Anthropic `system`, Responses `instructions`)."""
        return None

    def request_input_text(self, body: Any) -> str:
        """Prompt text of a request that has no messages (legacy completions, embeddings)."""
        return ""

    def is_stream_request(self, body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def response_model(self, body: Any) -> str | None:
        return self.request_model(body)

    def body_text(self, body: Any) -> str:
        """The assistant text of a whole (non-streamed) response body."""
        return ""

    def event_text(self, event: SSEEvent) -> str | None:
        """The assistant text carried by one streamed event, if any."""
        return None

    def body_usage(self, body: Any) -> Usage | None:
        return None

    def event_usage(self, event: SSEEvent) -> Usage | None:
        return None

    def event_model(self, event: SSEEvent) -> str | None:
        """The model the upstream says it served, from a streamed event that carries it."""
        return None

    def ask_stream_usage(self, body: Any) -> dict[str, Any] | None:
        """For a streamed request that would get no usage: the body that asks for it, else None."""
        return None

    def strip_stream_usage(self, event: SSEEvent) -> SSEEvent | None:
        """Undo `ask_stream_usage` on one event: the event as it would have been, or None to drop it."""
        return event

    def stream_usage(self, event: SSEEvent, strip: bool) -> tuple[Usage | None, SSEEvent | None]:
        """One streamed event's usage, and what goes on: with `strip`, the event as `strip_stream_usage` leaves it."""
        return self.event_usage(event), (self.strip_stream_usage(event) if strip else event)

    def is_terminal_event(self, event: SSEEvent) -> bool:
        """True for the event that ends a successful stream."""
        return False

    # ---- content safety: where the text is (proxy/protocols/text_slots.py, shape.py)

    def request_text_slots(self, body: Any) -> list[TextSlot]:
        """The prompt text a caller sends: messages, system prompt, tool results and arguments."""
        return []

    def response_text_slots(self, body: Any) -> list[TextSlot]:
        """The text a caller reads in a whole response body; a plain tool's JSON is read whole."""
        return [ROOT_VALUE]

    def event_text_slots(self, event: SSEEvent) -> list[TextSlot]:
        """The text in one streamed event; a delta's slot names the channel it continues."""
        return [ROOT_VALUE] if event.json() is not None else []

    def event_closes(self, event: SSEEvent) -> tuple[Channel, ...]:
        """Channels (by prefix) whose text is complete before this event; `()` stands for every channel."""
        return ()

    def data_text_slot(self, event: SSEEvent) -> TextSlot:
        """An event whose data is plain text, not JSON: its text continues the text of the events of its name."""
        return TextSlot((), "text", ("data", event.event))

    def continuation_event(self, template: SSEEvent, slot: TextSlot, text: str) -> SSEEvent:
        """An event like `template`, the channel's last delta, that carries only `text` for that channel."""
        if slot.path or slot.kind != "text":
            raise NotImplementedError(f"{self.name} streams have no JSON text channels")
        return SSEEvent.build(text, template.event)  # a plain-text channel (`data_text_slot`)

    def request_shape_problem(self, body: Any, path: str) -> str | None:
        """The first structural problem of a request body, in words for the caller, or None."""
        return None

    def plain_prompt(self, body: Any) -> list[str] | None:
        """The usual request's prompt texts, read in one pass (proxy/protocols/plain.py): its shape has no problem and
        these are its text slots' values. None for any other body: ask `request_shape_problem` and the slots."""
        return None

    def plain_answer(self, body: Any) -> str | None:
        """The text of an answer whose one text slot is a `text` slot (the usual answer), or None."""
        return None

    # ---- agent runs (proxy/limits/run_identity.py)

    def last_tool_calls(self, body: Any) -> list[tuple[Any, Any]]:
        """The tool calls of the conversation's latest assistant turn, as (name, arguments)."""
        return []

    # ---- prompt size (proxy/limits/estimate.py, proxy/accounting/tokens.py): the chat shapes both LLM adapters share

    def output_cap(self, body: Any, default: int) -> int:
        """The output tokens a request allows itself (`default` when it sets no cap), times its choices."""
        return prompt_size.output_cap(body, OUTPUT_CAPS, default, choices=True)

    def prompt_bound(self, raw: bytes, body: Any, media_part_tokens: int) -> int:
        """Prompt tokens at most: the body's bytes (`raw`), with media parts at `media_part_tokens` each."""
        if not prompt_size.may_hold_media(raw):  # most bodies: no messages to look through
            return len(raw)
        return prompt_size.media_bound(raw, self.request_messages(body), media_part_tokens)

    def message_text(self, message: Mapping[str, Any]) -> MessageText:
        """The texts of one message a tokenizer counts."""
        return prompt_size.message_text(message)

    def content_text(self, content: Any) -> str:
        """The text of a content value (a string, parts or blocks), e.g. a system prompt."""
        return prompt_size.content_text(content)

    def request_tools(self, body: Any) -> Any:
        """The tool definitions a request sends, counted as their JSON text."""
        return body.get("tools") if isinstance(body, dict) else None

    # ---- conversation structure (proxy/truncation/)

    def conversation(self, body: Any) -> Conversation | None:
        """The request's messages as pinned ones and turns (proxy/protocols/conversation.py); None: not a chat."""
        return None

    def with_messages(self, body: Any, keep: list[int]) -> Any:
        """The body keeping only the messages at `keep` (indices as `conversation` gave them)."""
        return with_messages(body, keep)

    # ---- response cache (proxy/cache/, proxy/protocols/cached.py)

    non_answer_fields: ClassVar[frozenset[str]] = frozenset()
    """Request fields that do not change the answer (the stream flag, caller ids): left out of cache keys."""
    answer_headers: ClassVar[tuple[str, ...]] = ()
    """Request headers that can change the answer (API versions, beta features): part of cache keys."""
    DEFAULT_TEMPERATURE: ClassVar[float] = 1.0

    def cache_fields(self, body: Any) -> dict[str, Any] | None:
        """What of a request decides its answer; None where answers are not cached."""
        if not self.parses_json or not isinstance(body, dict):
            return None
        return {name: value for name, value in body.items() if name not in self.non_answer_fields}

    def cache_question(self, body: Any) -> tuple[dict[str, Any], str] | None:
        """The cache fields without the final user turn, and that turn's text; None unless it is text only."""
        fields = self.cache_fields(body)
        messages = fields.get("messages") if fields is not None else None
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
            return None
        last = messages[-1]
        if last.get("role") != "user" or set(last) - {"role", "content"}:
            return None
        text = plain_text(last.get("content"))
        return None if text is None else ({**fields, "messages": messages[:-1]}, text)  # type: ignore[dict-item]

    def request_temperature(self, body: Any) -> float:
        """The sampling temperature asked for; the providers' default when none is."""
        value = body.get("temperature") if isinstance(body, dict) else None
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else self.DEFAULT_TEMPERATURE  # type: ignore[arg-type]

    def stream_usage_requested(self, body: Any) -> bool:
        """Whether a streamed answer to this request carries usage."""
        return False

    def stream_assembler(self) -> Assembler | None:
        """Assembles a stream into the whole body it stands for; None where streams are not stored."""
        return None

    def cached_body(self, body: dict[str, Any]) -> bytes:
        """A stored answer served again, as a new answer: a fresh id and creation time."""
        return orjson.dumps(fresh_body(body))

    def cached_stream(self, body: dict[str, Any], include_usage: bool) -> bytes | None:
        """A stored answer as this protocol's SSE stream; None where it cannot be streamed."""
        return None

    # ---- functions an answer proposes, tools a request offers (proxy/protocols/tool_calls.py)

    tool_call_markers: ClassVar[tuple[bytes, ...]] = ()
    """Bytes one of which a body or event proposing a call contains: the rest are never parsed for calls."""

    # `raw.find(x) >= 0`, not `x in raw`: on bytes, `in` first tries x as an int (a TypeError built and cleared).
    def may_propose_calls(self, raw: bytes) -> bool:
        return any(raw.find(marker) >= 0 for marker in self.tool_call_markers)

    def body_tool_calls(self, body: Any) -> list[str]:
        """The function names a whole answer asks the caller to call ("" for a call without a name)."""
        return []

    def event_tool_calls(self, event: SSEEvent) -> list[CallPart]:
        """The parts of proposed calls one streamed event carries."""
        return []

    def filter_request_tools(self, body: Any, allowed: Callable[[str], bool]) -> tuple[Any | None, list[str]]:
        """The request offering only the functions `allowed` accepts (None: unchanged), and the names removed."""
        return None, []

    def forced_function(self, body: Any) -> str | None:
        """The function a request forces the model to call (`tool_choice`), if any."""
        return None

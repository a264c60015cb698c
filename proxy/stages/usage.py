"""Usage: the tokens every response used, what they cost, and the ledger record.

Last in the chain, so its response hooks run first and see the upstream's own events.
The protocol adapter reads usage from bodies and events. OpenAI-style streams report
usage only when asked: if the caller did not ask, this stage asks upstream and removes
the answer from the stream again, so the caller receives the stream it asked for.
When the upstream reports nothing, or a stream was cut short (caller gone, upstream
broke), the tokens are counted locally and the record is marked estimated.

Usage an upstream reports is untrusted input: the adapter keeps only JSON integers from 0
to `MAX_REPORTED_TOKENS` (proxy/protocols/base.py); any other value counts as not
reported, so it is estimated, and the request's log line and
`agent_proxy_stage_decisions_total{stage="usage",decision="usage_rejected"}` say so.

`on_complete` (after the caller has its answer) prices the usage, enqueues the ledger record
(none for a request refused before its caller was identified) and counts the metrics; the log
line is written after it and carries the same figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, ClassVar

import orjson

from proxy.accounting.config import UsageConfig
from proxy.accounting.ledger import Record
from proxy.accounting.pricing import OTHER, price, resolve
from proxy.accounting.tokens import count_request, count_tokens
from proxy.errors import Forbidden, Unauthorized
from proxy.exchange import Exchange, Outcome, Reply
from proxy.logs import logged_model
from proxy.metrics import Metrics, adder
from proxy.pipeline import Stage, StageFactory
from proxy.policy.schema import Pricing, Route
from proxy.protocols.base import Protocol, Usage
from proxy.protocols.sse import SSEEvent
from proxy.rounding import round_to
from proxy.services import Services

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext

SESSION_HEADER = "x-session-id"
MAX_SESSION_ID = 128
# Held events past this are read into text and let go. A held event costs its raw bytes and about a kilobyte more
# (its data as text, its parse): a chunk of one character is ~130 raw bytes but ~1.2 KB held.
EVENT_HOLD_BYTES = 1024 * 1024
HELD_EVENT_COST = 1024
ESTIMATE_CHARS = 1024 * 1024  # generated text kept for an estimate; a longer answer's rest counts at its rate
ESTIMATE_CHUNK = 64 * 1024  # the kept text is counted this many characters at a time: the tokenizer's pieces of
# a whole 1 Mi characters would take 10-18 MB at once
TOKEN_KINDS = (
    ("input", "input_tokens"),
    ("cached_input", "cached_input_tokens"),
    ("cache_write", "cache_write_tokens"),
    ("output", "output_tokens"),
    ("reasoning", "reasoning_tokens"),
)


class UsageStage(Stage):
    name: ClassVar[str] = "usage"

    def __init__(self, factory: UsageFactory):
        super().__init__(factory.mode)
        self._factory = factory
        self._strip = False  # we asked for stream usage: remove it from what the caller gets
        self._texts: list[str] = []  # generated text, for an estimate if no final usage comes
        self._chars = 0  # characters of it, kept or not
        # Streamed events kept for that estimate, read only if it is needed (rarely: most upstreams report usage).
        self._events: list[SSEEvent] = []
        self._held = 0
        self._complete = False  # the response was seen whole (terminal event or full body)
        self._last: SSEEvent | None = None  # the last streamed event seen

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        if self.enforcing and self._factory.config.stream_usage and ex.has_llm_body:
            asked = ex.protocol.ask_stream_usage(ex.request_json)
            if asked is not None:
                ex.replace_request_json(asked)
                self._strip = True
        return None

    def on_response_event(self, ex: Exchange, event: SSEEvent) -> list[SSEEvent]:
        protocol = ex.protocol
        if not protocol.parses_json:
            return [event]
        if ex.model_served is None:
            ex.model_served = protocol.event_model(event)
        usage, kept = protocol.stream_usage(event, self._strip)
        if usage is not None:
            self._take(ex, usage)
        self._last = event
        if self._factory.config.estimate:
            self._events.append(event)
            self._held += len(event.raw) + HELD_EVENT_COST
            if self._held > EVENT_HOLD_BYTES:
                self._read_texts(protocol)
        return [] if kept is None else [kept]

    def on_response_end(self, ex: Exchange) -> list[SSEEvent]:
        # Seen whole if it ended with the protocol's terminal event (tested once, not on every event).
        self._complete = self._last is not None and ex.protocol.is_terminal_event(self._last)
        return []

    def on_response_body(self, ex: Exchange, body: bytes) -> bytes:
        if not ex.protocol.parses_json or not _success(ex) or not body:
            return body
        try:
            payload = ex.response_json(body)
        except orjson.JSONDecodeError:
            return body
        ex.model_served = ex.protocol.response_model(payload) or ex.model_served
        if (usage := ex.protocol.body_usage(payload)) is not None:
            self._take(ex, usage)
        elif self._factory.config.estimate:
            self._keep_text(ex.protocol.body_text(payload))
        self._complete = True
        return body

    def _take(self, ex: Exchange, usage: Usage) -> None:
        """Counts the upstream reported; unbelievable ones are left to the estimate, and said so once."""
        if usage.rejected and not ex.usage.rejected:
            self.decide(ex, "usage_rejected")
        ex.usage.update(usage)

    async def on_complete(self, ex: Exchange) -> None:
        factory = self._factory
        if factory.config.estimate and self._needs_estimate(ex):
            estimate = await asyncio.to_thread(self._estimate, ex)
            _merge_estimate(ex.usage, estimate, cut_short=not self._complete)
            ex.usage_estimated = True
        found = resolve(ex.model_served, factory.pricing) or resolve(ex.model_requested, factory.pricing)
        if ex.cache_hit:
            ex.cost_usd = 0.0
        elif found is not None and ex.usage.known:
            ex.cost_usd = price(ex.usage, found[1])
        ledger = factory.services.ledger
        if ledger is not None and not _refused_before_identity(ex):  # first: the metrics cannot lose it
            ledger.record(self._record(ex, found[0] if found else None))
        self._count(ex, found[0] if found else OTHER)

    # ---- estimates

    def _needs_estimate(self, ex: Exchange) -> bool:
        if not ex.protocol.parses_json or not _success(ex) or ex.outcome is Outcome.LOCAL_REPLY:
            return False
        usage = ex.usage
        return usage.input_tokens is None or usage.output_tokens is None or not self._complete

    def _read_texts(self, protocol: Protocol) -> None:
        self._keep_text("".join(text for event in self._events if (text := protocol.event_text(event))))
        self._events.clear()
        self._held = 0

    def _keep_text(self, text: str) -> None:
        """Up to ESTIMATE_CHARS: an endless stream must not grow the memory it takes to count it."""
        if (room := ESTIMATE_CHARS - self._chars) > 0:
            self._texts.append(text[:room] if len(text) > room else text)
        self._chars += len(text)

    def _estimate(self, ex: Exchange) -> Usage:
        """Blocking (tiktoken, and its first load): runs in a thread."""
        model = ex.model_served or ex.model_requested
        protocol = ex.protocol
        self._read_texts(protocol)
        body = ex.request_json if ex.body else None
        prompt = count_request(protocol, body, model)
        text = "".join(self._texts)
        self._texts = []
        output = sum(count_tokens(chunk, model) for chunk in _chunks(text, ESTIMATE_CHUNK))
        if self._chars > len(text):  # beyond what was kept, at the rate of what was
            output = -(-output * self._chars // len(text))
        return Usage(input_tokens=prompt, output_tokens=output)

    # ---- metrics and the record

    def _count(self, ex: Exchange, model_label: str) -> None:
        metrics = self._factory.services.metrics
        caller = ex.caller.profile if ex.caller else "none"
        upstream = ex.upstream_name or "none"
        usage = ex.usage
        if ex.usage_estimated:
            metrics.child(metrics.usage_estimated, caller, upstream).inc()
        if ex.cache_hit or not usage.known:
            return
        counters = self._factory.counters(caller, model_label)
        for kind, attr in TOKEN_KINDS:
            if value := getattr(usage, attr):
                counters.tokens(kind)(value)
        if ex.cost_usd is not None:
            counters.cost()(ex.cost_usd)
        elif usage.total_tokens:
            metrics.child(metrics.unpriced, caller, upstream).inc()

    @staticmethod
    def _record(ex: Exchange, model_priced: str | None) -> Record:
        caller, usage, tool = ex.caller, ex.usage, ex.tool_call
        session = ex.headers.get(SESSION_HEADER)
        ttfb = ex.ttfb_s
        # Positional, in the order of Record's fields: a keyword call of a class builds a dict of them on the
        # way to __init__, three times the cost of the record itself.
        return Record(
            ex.request_id,
            time.time() - (time.perf_counter() - ex.started),  # ts
            caller.name if caller else None,
            caller.key_id if caller else None,
            caller.profile if caller else None,
            ex.route.label,
            ex.upstream_name,
            logged_model(ex.model_requested),  # bounded, as in the log line
            ex.model_served,
            model_priced,
            ex.status,
            str(ex.outcome) if ex.outcome else None,  # the plain str: a StrEnum's `.value` costs three times as much
            ex.streaming,
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_input_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
            ex.cost_usd,
            round_to(ex.elapsed_s * 1000, 3),  # latency_ms
            round_to(ttfb * 1000, 3) if ttfb is not None else None,  # ttfb_ms
            ex.cache_hit,
            ex.usage_estimated,  # estimated
            session[:MAX_SESSION_ID] if session else None,
            tool.server if tool else None,
            tool.tool if tool else None,
            tool.settle(ex) if tool else None,  # tool_outcome
        )


def _chunks(text: str, size: int) -> Iterator[str]:
    """`text` in pieces of at most `size` characters, each cut before a space that follows a character other
    than whitespace, where there is one in its second half. No piece of either encoding's split spans such a
    cut (a piece may begin with that space; none ends with it or looks past it), so the pieces' counts add up
    to the whole's; a text with no such space in a window is cut at `size` (within a token or so)."""
    start, end = 0, len(text)
    while start < end:
        stop = start + size
        if stop < end:
            low = start + size // 2
            space = text.rfind(" ", low, stop)
            while space > low and text[space - 1].isspace():
                space = text.rfind(" ", low, space - 1)
            if space > low:
                stop = space
        yield text[start:stop]
        start = stop


def _refused_before_identity(ex: Exchange) -> bool:
    """No key, a bad key: counted (`agent_proxy_auth_failures_total`) and logged, never a ledger row, so a
    flood of bad keys cannot grow the ledger. Rows are for identified callers and routes with `auth: none`."""
    return ex.caller is None and isinstance(ex.error, (Unauthorized, Forbidden))


def _success(ex: Exchange) -> bool:
    return ex.status is not None and 200 <= ex.status < 300


def _merge_estimate(usage: Usage, estimate: Usage, cut_short: bool) -> None:
    """Fill what the upstream did not report; a cut stream's output is at least what was seen."""
    if usage.input_tokens is None:
        usage.input_tokens = estimate.input_tokens
    if usage.output_tokens is None:
        usage.output_tokens = estimate.output_tokens
    elif cut_short:  # e.g. Anthropic's message_start carries a placeholder output count
        usage.output_tokens = max(usage.output_tokens, estimate.output_tokens or 0)


class ModelCounters:
    """A caller profile's and model's token and cost series, each looked up once it is first counted: one dict
    hit per request rather than one labelled lookup per series (a series appears when first counted, as before).
    What it hands out is the series' adder (see `proxy.metrics.adder`)."""

    __slots__ = ("_cost", "_labels", "_metrics", "_tokens")

    def __init__(self, metrics: Metrics, caller: str, model: str):
        self._metrics = metrics
        self._labels = (caller, model)
        self._tokens: dict[str, Callable[[float], None]] = {}
        self._cost: Callable[[float], None] | None = None

    def tokens(self, kind: str) -> Callable[[float], None]:
        found = self._tokens.get(kind)
        if found is None:
            found = self._tokens[kind] = adder(self._metrics.child(self._metrics.tokens, *self._labels, kind))
        return found

    def cost(self) -> Callable[[float], None]:
        if self._cost is None:
            self._cost = adder(self._metrics.child(self._metrics.cost_usd, *self._labels))
        return self._cost


class UsageFactory(StageFactory):
    stage = UsageStage
    observes_response: ClassVar[bool] = True

    def __init__(self, config: UsageConfig, pricing: Mapping[str, Pricing], services: Services):
        super().__init__(config.mode)
        self.config = config
        self.pricing = pricing
        self.services = services
        # Bounded as the labels are: caller profiles and price-table names (or `other`) from the policy.
        self._counters: dict[tuple[str, str], ModelCounters] = {}

    def counters(self, caller: str, model: str) -> ModelCounters:
        found = self._counters.get((caller, model))
        if found is None:
            found = self._counters[caller, model] = ModelCounters(self.services.metrics, caller, model)
        return found


class RecordOnlyFactory(UsageFactory):
    """Tool routes (http, mcp) carry no tokens: a ledger record without reading their bodies."""

    observes_response: ClassVar[bool] = False


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    config: UsageConfig = ctx.stage_config(route, "usage")
    if config.mode == "off":
        return None
    llm = ctx.speaks_llm(route)
    return (UsageFactory if llm else RecordOnlyFactory)(config, ctx.policy.pricing, ctx.services)

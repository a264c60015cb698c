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
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.accounting.config import UsageConfig
from proxy.accounting.ledger import Row, make_row
from proxy.accounting.pricing import OTHER, price, resolve
from proxy.accounting.tokens import count_request, count_tokens
from proxy.errors import Forbidden, Unauthorized
from proxy.exchange import Exchange, Outcome, Reply
from proxy.logs import MAX_MODEL_CHARS, logged_model
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
    # Where a request starts, as class attributes: one stage is made per request, and an instance sets them only
    # when they change.
    _strip = False  # we asked for stream usage: remove it from what the caller gets
    _chars = 0  # characters of the generated text, kept or not
    _held = 0  # bytes of streamed events held (HELD_EVENT_COST each on top)
    _complete = False  # the response was seen whole (terminal event or full body)
    _last: SSEEvent | None = None  # the last streamed event seen

    def __init__(self, factory: UsageFactory):
        super().__init__(factory.mode)
        self._factory = factory
        self._texts: list[str] = []  # generated text, for an estimate if no final usage comes
        # Streamed events kept for that estimate, read only if it is needed (rarely: most upstreams report usage).
        self._events: list[SSEEvent] = []

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
        protocol = ex.protocol
        status = ex.status
        if not protocol.parses_json or status is None or not 200 <= status < 300 or not body:  # `_success`, inline
            return body
        try:
            payload = ex.response_json(body)
        except orjson.JSONDecodeError:
            return body
        ex.model_served = protocol.response_model(payload) or ex.model_served
        if (usage := protocol.body_usage(payload)) is not None:
            self._take(ex, usage)
        elif self._factory.config.estimate:
            self._keep_text(protocol.body_text(payload))
        self._complete = True
        return body

    def _take(self, ex: Exchange, usage: Usage) -> None:
        """Counts the upstream reported; unbelievable ones are left to the estimate, and said so once."""
        if usage.rejected and not ex.usage.rejected:
            self.decide(ex, "usage_rejected")
        ex.usage.update(usage)

    async def on_complete(self, ex: Exchange) -> None:
        factory = self._factory
        usage = ex.usage
        missing = usage.input_tokens is None or usage.output_tokens is None or not self._complete
        if missing and factory.config.estimate and self._estimable(ex):
            estimate = await asyncio.to_thread(self._estimate, ex)
            _merge_estimate(usage, estimate, cut_short=not self._complete)
            ex.usage_estimated = True
        requested = _UNREAD  # the request's model, read at most once
        found = factory.resolve(ex.model_served)
        if found is None:
            found = factory.resolve(requested := ex.model_requested)
        if ex.cache_hit:
            ex.cost_usd = 0.0
        elif found is not None and usage.known:
            ex.cost_usd = price(usage, found[1])
        ledger = factory.services.ledger
        # First: the metrics cannot lose it. None for a request refused before its caller was identified.
        if ledger is not None and (ex.caller is not None or not _refused_before_identity(ex)):
            if requested is _UNREAD:
                requested = ex.model_requested
            ledger.record_row(self._record(ex, found[0] if found else None, requested))
        self._count(ex, found[0] if found else OTHER)

    # ---- estimates

    def _estimable(self, ex: Exchange) -> bool:
        """Whether a response whose usage is not all known, or that was cut short, is estimated."""
        return ex.protocol.parses_json and _success(ex) and ex.outcome is not Outcome.LOCAL_REPLY

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
        caller = ex.caller.profile if ex.caller else "none"
        usage = ex.usage
        if ex.usage_estimated:
            metrics = self._factory.services.metrics
            metrics.child(metrics.usage_estimated, caller, ex.upstream_name or "none").inc()
        if ex.cache_hit or not usage.known:
            return
        factory = self._factory
        counters = factory.model_counters.get((caller, model_label)) or factory.counters(caller, model_label)
        if not counters.count(usage, ex.cost_usd) and usage.total_tokens:
            metrics = factory.services.metrics
            metrics.child(metrics.unpriced, caller, ex.upstream_name or "none").inc()

    def _record(self, ex: Exchange, model_priced: str | None, model_requested: str | None) -> Row:
        """The ledger row (proxy/accounting/ledger.py `make_row`, positionally, in the order of its columns)."""
        caller, usage, tool = ex.caller, ex.usage, ex.tool_call
        session = ex.headers.get(SESSION_HEADER)
        ttfb = ex.ttfb_s
        return make_row(
            ex.request_id,
            time.time() - (time.perf_counter() - ex.started),  # ts
            caller.name if caller else None,
            caller.key_id if caller else None,
            caller.profile if caller else None,
            ex.route.label,
            ex.upstream_name,
            self._factory.logged_model(model_requested),  # bounded, as in the log line
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
    Each holds the series' adder (see `proxy.metrics.adder`), None until then."""

    __slots__ = ("_labels", "_metrics", *(f"_{kind}" for kind, _ in TOKEN_KINDS), "_cost")

    def __init__(self, metrics: Metrics, caller: str, model: str):
        self._metrics = metrics
        self._labels = (caller, model)
        self._input: Callable[[float], None] | None = None
        self._cached_input: Callable[[float], None] | None = None
        self._cache_write: Callable[[float], None] | None = None
        self._output: Callable[[float], None] | None = None
        self._reasoning: Callable[[float], None] | None = None
        self._cost: Callable[[float], None] | None = None

    def count(self, usage: Usage, cost: float | None) -> bool:
        """Adds the request's tokens by kind (those it has, in TOKEN_KINDS' order) and its cost; False if it
        has no cost. Spelled out per kind: a loop with getattr costs three times as much."""
        if value := usage.input_tokens:
            (self._input or self._tokens("input"))(value)
        if value := usage.cached_input_tokens:
            (self._cached_input or self._tokens("cached_input"))(value)
        if value := usage.cache_write_tokens:
            (self._cache_write or self._tokens("cache_write"))(value)
        if value := usage.output_tokens:
            (self._output or self._tokens("output"))(value)
        if value := usage.reasoning_tokens:
            (self._reasoning or self._tokens("reasoning"))(value)
        if cost is None:
            return False
        if self._cost is None:
            self._cost = adder(self._metrics.child(self._metrics.cost_usd, *self._labels))
        self._cost(cost)
        return True

    def _tokens(self, kind: str) -> Callable[[float], None]:
        add = adder(self._metrics.child(self._metrics.tokens, *self._labels, kind))
        setattr(self, f"_{kind}", add)
        return add


_UNREAD: Any = object()
# Model names (of at most MAX_MODEL_CHARS) a factory remembers the logged form and the price-table entry (or none)
# of: the first ones seen; past that, the others are worked out on every request, as before.
LOGGED_MODELS = 256
RESOLVED_MODELS = 256


class UsageFactory(StageFactory):
    stage = UsageStage
    observes_response: ClassVar[bool] = True

    def __init__(self, config: UsageConfig, pricing: Mapping[str, Pricing], services: Services):
        super().__init__(config.mode)
        self.config = config
        self.pricing = pricing
        self.services = services
        # Bounded as the labels are: caller profiles and price-table names (or `other`) from the policy.
        self.model_counters: dict[tuple[str, str], ModelCounters] = {}
        # Bounded by count and length (model names come from callers and upstreams).
        self._resolved: dict[str | None, tuple[str, Pricing] | None] = {}
        self._logged: dict[str | None, str | None] = {}

    def counters(self, caller: str, model: str) -> ModelCounters:
        found = self.model_counters.get((caller, model))
        if found is None:
            found = self.model_counters[caller, model] = ModelCounters(self.services.metrics, caller, model)
        return found

    def resolve(self, model: str | None) -> tuple[str, Pricing] | None:
        """`pricing.resolve` with the policy's table, remembered: the tables are fixed while the policy is."""
        found = self._resolved.get(model, _UNREAD)
        if found is _UNREAD:
            found = resolve(model, self.pricing)
            if len(self._resolved) < RESOLVED_MODELS and (model is None or len(model) <= MAX_MODEL_CHARS):
                self._resolved[model] = found
        return found  # type: ignore[no-any-return]

    def logged_model(self, model: str | None) -> str | None:
        """`proxy.logs.logged_model`, remembered (the log line computes its own)."""
        logged = self._logged.get(model, _UNREAD)
        if logged is _UNREAD:
            logged = logged_model(model)
            if len(self._logged) < LOGGED_MODELS and (model is None or len(model) <= MAX_MODEL_CHARS):
                self._logged[model] = logged
        return logged  # type: ignore[no-any-return]


class RecordOnlyFactory(UsageFactory):
    """Tool routes (http, mcp) carry no tokens: a ledger record without reading their bodies."""

    observes_response: ClassVar[bool] = False


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    config: UsageConfig = ctx.stage_config(route, "usage")
    if config.mode == "off":
        return None
    llm = ctx.speaks_llm(route)
    return (UsageFactory if llm else RecordOnlyFactory)(config, ctx.policy.pricing, ctx.services)

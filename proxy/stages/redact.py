"""Redaction: PII and secrets out of what callers receive, and (optionally) out of prompts before they leave.

Near the end of the chain, so on the way back it sees the upstream's events after usage
has read them, and what it releases is what the cache would store. On the way out it
masks or pseudonymises the prompt (proxy/safety/content.py); on the way back it redacts
whole bodies, or streams event by event with a bounded hold-back per channel
(proxy/safety/events.py), and puts original values back where the model repeated a
placeholder. A `block` hit refuses a whole body with a 403 in the protocol's shape, or ends
a stream with the protocol's error event. Counts by detector go to the metrics and the
log line; values never do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import orjson

from proxy.errors import Forbidden
from proxy.exchange import Exchange, Reply
from proxy.pipeline import Stage, StageFactory
from proxy.policy.schema import Route
from proxy.protocols.sse import SSEEvent
from proxy.safety.config import RedactionConfig
from proxy.safety.content import CompiledRedaction, ExchangeRedaction
from proxy.safety.events import StreamRewriter
from proxy.services import Services

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext


class RedactStage(Stage):
    name: ClassVar[str] = "redaction"
    # The per-request state starts as these class defaults, set on the instance when it changes: a clean answer
    # changes none of it, and is spared five stores per request.
    _redaction: ExchangeRedaction | None = None
    _stream: StreamRewriter | None = None
    _done = False
    _counts: dict[tuple[str, str], int]  # as `_finish` took them (nothing redacts after it; read once `_done`)
    _block_noted = False

    def __init__(self, factory: RedactFactory):
        super().__init__(factory.mode)
        self._factory = factory

    def _exchange(self, ex: Exchange) -> ExchangeRedaction:
        if self._redaction is None:
            self._redaction = ExchangeRedaction(self._factory.compiled, ex.caller.name if ex.caller else "")
        return self._redaction

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        if self._factory.compiled.input is None or not ex.has_llm_body:
            return None
        body = orjson.loads(orjson.dumps(ex.request_json))  # a copy: shadow mode must leave the request alone
        if self._exchange(ex).redact_request(ex.protocol, body):
            self.decide(ex, "prompt_redacted")
            if self.enforcing:
                ex.replace_request_json(body)
        return None

    def on_response_event(self, ex: Exchange, event: SSEEvent) -> list[SSEEvent]:
        if not self._factory.observes_response:  # prompts masked, nothing to put back: other stages read the events
            return [event]
        if self._stream is None:
            self._stream = StreamRewriter(ex.protocol, self._exchange(ex))
        out = self._stream.event(event)
        if self._stream.blocked is not None:
            self._note_block(ex)
        return out

    def on_response_end(self, ex: Exchange) -> list[SSEEvent]:
        if self._stream is None:
            return []
        out = self._stream.end()
        self._note_block(ex)
        self._finish(ex)
        return out

    def on_response_body(self, ex: Exchange, body: bytes) -> bytes:
        status = ex.status or 0
        if not self._factory.observes_response or (ex.protocol.parses_json and not 200 <= status < 300):
            return body
        content_type = ex.response_headers.get("content-type", "")
        # No pseudonyms to put back: a clean answer of one text needs nothing built (CompiledRedaction.plain_text).
        if self._redaction is None and (scanner := self._factory.compiled.output) is not None:
            text = CompiledRedaction.plain_text(ex.protocol, body, content_type, ex.response_json)
            if text is not None:
                if scanner.finds_nothing_in(text):
                    return body  # no counts, as `_finish` and `on_complete` would have found
                self._exchange(ex).anchored = text  # searched: `redact_body` does not search it again
        try:
            redacted = self._exchange(ex).redact_body(ex.protocol, body, content_type, ex.response_json)
        except Forbidden as err:  # a block hit
            ex.forget_response_json()  # the parse may be redacted in part
            self.decide(ex, "blocked")
            self._finish(ex)
            if self.enforcing:
                ex.error = err
                raise
            return body
        if redacted is not body:  # the parse was redacted in place: it no longer stands for `body`
            ex.forget_response_json()
        self._finish(ex)
        return redacted

    def _note_block(self, ex: Exchange) -> None:
        stream = self._stream
        if stream is not None and stream.blocked is not None and not self._block_noted:
            self._block_noted = True
            self.decide(ex, "blocked")
            if self.enforcing:
                ex.error = stream.blocked

    def _finish(self, ex: Exchange) -> None:
        """The response is through: the counts go on the exchange, for the metrics and the log line."""
        if self._done or self._redaction is None:
            return
        self._done = True
        counts = self._counts = self._redaction.counts()
        if any(direction == "output" for direction, _ in counts):
            self.decide(ex, "redacted")
        ex.redactions.update(counts)

    async def on_complete(self, ex: Exchange) -> None:
        if self._redaction is None:
            return
        if self._done:
            counts = self._counts
        else:  # a stream that broke or a caller that left: count what was seen
            counts = self._redaction.counts()
            ex.redactions.update(counts)
        if not self.enforcing:
            return
        metric = self._factory.services.metrics.redactions
        for (direction, detector), count in counts.items():
            metric.labels(detector, self._factory.route_label, direction).inc(count)


class OutputRedactStage(RedactStage):
    """No prompt redaction in the policy: the pass-through request-body hook, which the chain then skips."""

    on_request_body = Stage.on_request_body  # type: ignore[assignment]


class RedactFactory(StageFactory):
    stage = RedactStage
    observes_response: ClassVar[bool] = True

    def __init__(self, config: RedactionConfig, compiled: CompiledRedaction, route_label: str, services: Services):
        super().__init__(config.mode)
        self.compiled = compiled
        self.route_label = route_label
        self.services = services


class OutputOnlyFactory(RedactFactory):
    """Responses redacted, prompts left as they are (the usual policy)."""

    stage = OutputRedactStage


class PromptOnlyFactory(RedactFactory):
    """Prompts masked before they leave, nothing to put back: response bodies stay untouched and unparsed."""

    observes_response: ClassVar[bool] = False


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    config: RedactionConfig = ctx.stage_config(route, "redaction")
    if config.mode == "off" or not (config.output or config.input):
        return None
    llm = ctx.speaks_llm(route)
    if not llm and not config.output:  # prompts exist on LLM routes only
        return None
    compiled = ctx.shared(f"redaction:{id(config)}", lambda: CompiledRedaction.from_config(config))
    if not compiled.observes_response:
        return PromptOnlyFactory(config, compiled, route.label, ctx.services)
    if compiled.input is None:
        return OutputOnlyFactory(config, compiled, route.label, ctx.services)
    return RedactFactory(config, compiled, route.label, ctx.services)

"""Truncation: a chat prompt over its token budget loses its oldest turns before it leaves.

After the limits (admission reserved the prompt as sent, an upper bound) and before the
cache (which keys on what is actually sent). The conversation's structure is the adapter's
(`protocol.conversation`), the choice of turns is proxy/truncation/trim.py, counts come from
the offline tokenizer. Only a trimmed body is re-serialised. A body whose bytes are within
the budget is not counted (a token is at least one byte), nor one whose model has no
budget, and a message counted before is not counted again (proxy/truncation/counts.py).
When the newest turn that may start a conversation does not fit beside the system prompt
and tools, the request is refused with 400 `context_length_exceeded`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from proxy.accounting.tokens import ready
from proxy.errors import BadRequest
from proxy.exchange import Exchange, Reply
from proxy.pipeline import Stage, StageFactory
from proxy.policy.schema import Route
from proxy.protocols.base import Protocol
from proxy.protocols.conversation import Conversation
from proxy.services import Services
from proxy.truncation.budget import prompt_budget
from proxy.truncation.config import TruncationConfig
from proxy.truncation.counts import MESSAGE_COUNTS
from proxy.truncation.trim import Cut, trim

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext

TRUNCATED_HEADER = "x-agent-proxy-truncated"
COUNT_INLINE_BYTES = 4_000  # larger bodies are counted in a thread (the count is Python: ~0.3 ms per KB of prose)


def _cut(protocol: Protocol, body: Any, conversation: Conversation, model: str | None, budget: int) -> Cut:
    """Blocking (tiktoken) for a large body: runs in a thread."""
    messages = protocol.chat_messages(body) or []
    counts = [MESSAGE_COUNTS.count(message, model, protocol) for message in messages]
    fixed = MESSAGE_COUNTS.fixed(model, protocol.system_prompt(body), protocol.request_tools(body), protocol)
    return trim(conversation, counts, fixed, budget)


class TruncationStage(Stage):
    name: ClassVar[str] = "truncation"

    def __init__(self, factory: TruncationFactory):
        super().__init__(factory.mode)
        self._factory = factory
        self._dropped = 0

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        if not ex.has_llm_body:
            return None
        protocol, body, config = ex.protocol, ex.request_json, self._factory.config
        conversation = protocol.conversation(body)
        if conversation is None:
            return None
        model = protocol.request_model(body)
        budget = prompt_budget(config, model, protocol.output_cap(body, config.default_output_tokens))
        if budget is None or len(ex.body) <= budget:
            return None
        if len(ex.body) > COUNT_INLINE_BYTES or not ready(model):  # the first count loads the encoding
            cut = await asyncio.to_thread(_cut, protocol, body, conversation, model, budget)
        else:
            cut = _cut(protocol, body, conversation, model, budget)
        if not cut.fits:
            self._count("too_long", 0)
            raise BadRequest(
                f"the prompt has about {cut.tokens_before} tokens and its newest turn does not fit in this "
                f"route's budget of {budget} prompt tokens; shorten the latest message",
                code="context_length_exceeded",
            )
        if cut.keep is None:
            return None
        self.decide(ex, f"truncated:{cut.dropped_messages}msgs:{cut.tokens_cut}tokens")
        self._count("truncated", cut.tokens_cut)
        if self.enforcing:
            ex.replace_request_json(protocol.with_messages(body, cut.keep))
            self._dropped = cut.dropped_messages
        return None

    def on_response_headers(self, ex: Exchange) -> None:
        if self._dropped:
            ex.response_headers[TRUNCATED_HEADER] = str(self._dropped)

    def _count(self, result: str, tokens: int) -> None:
        factory = self._factory
        metrics = factory.services.metrics
        metrics.child(metrics.truncations, factory.route_label, result, self.mode).inc()
        if tokens:
            metrics.child(metrics.truncated_tokens, factory.route_label, self.mode).inc(tokens)


class TruncationFactory(StageFactory):
    stage = TruncationStage

    def __init__(self, config: TruncationConfig, route_label: str, services: Services):
        super().__init__(config.mode)
        self.config = config
        self.route_label = route_label
        self.services = services


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    config: TruncationConfig | None = ctx.stage_config(route, "truncation")
    if config is None or config.mode == "off" or not ctx.speaks_llm(route):
        return None
    return TruncationFactory(config, route.label, ctx.services)

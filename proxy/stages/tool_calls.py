"""Tool-call governance: an LLM answer may not steer the caller to a function the caller may not use.

Just before redaction, so on the way back it sees the events redaction released (the calls'
names are never rewritten) and decides before the cache would store an answer. On the way
out it can remove from the request's `tools` the functions the caller may not use. On the
way back it reads the calls an answer proposes (the adapters find them: OpenAI `tool_calls`,
legacy `function_call` and Responses items, Anthropic `tool_use` blocks) and, for a function
the caller may not use, allows it, flags it (a header on a whole answer, a log line, the
metric) or denies it: a whole answer becomes a 403 in the protocol's shape (a refusal the
SDKs do not retry, unlike a 5xx), a stream ends with the protocol's error event before any
byte of the call goes out (proxy/tools/proposed.py holds a call's parts until its name is
known).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, ClassVar

import orjson

from proxy.auth.permissions import Permissions
from proxy.errors import Forbidden
from proxy.exchange import Exchange, Reply
from proxy.pipeline import Stage, StageFactory
from proxy.policy.schema import Route
from proxy.protocols.sse import SSEEvent
from proxy.services import Services
from proxy.tools.proposed import CallGate, FunctionRules, Verdicts, loggable
from proxy.tools.proposed_config import ToolCallsConfig

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext

log = logging.getLogger("agent_proxy.tool_calls")
FLAG_HEADER = "x-agent-proxy-tool-flagged"
MAX_FLAGGED_IN_HEADER = 8
_HEADER_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-]")


def refusal(function: str) -> Forbidden:
    shown = f"the function '{loggable(function)}'" if function else "a function without a name"
    return Forbidden(f"the model asked for {shown}, which this caller may not use", code="tool_not_allowed")


class ToolCallsStage(Stage):
    name: ClassVar[str] = "tool_calls"

    def __init__(self, factory: ToolCallsFactory):
        super().__init__(factory.mode)
        self._factory = factory
        self._verdicts: Verdicts | None = None
        self._gate: CallGate | None = None
        self._reported = False

    def _profile(self, ex: Exchange) -> str | None:
        return ex.caller.profile if ex.caller is not None else None

    def _judging(self, ex: Exchange) -> Verdicts:
        if self._verdicts is None:
            allowed = self._factory.rules.checker(self._profile(ex))
            self._verdicts = Verdicts(self._factory.config.action, allowed)
        return self._verdicts

    # ---- the request: the tools it offers

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        if not self._factory.config.filter_request_tools or not ex.has_llm_body:
            return None
        body = ex.request_json
        allowed = self._factory.rules.checker(self._profile(ex))
        forced = ex.protocol.forced_function(body)
        if forced is not None and not allowed(forced):
            raise Forbidden(
                f"the request forces the function '{loggable(forced)}', which this caller may not use",
                code="tool_not_allowed",
            )
        new, removed = ex.protocol.filter_request_tools(body, allowed)
        if new is not None:
            self.decide(ex, "tools_filtered")
            fields = {"request_id": ex.request_id, "route": ex.route.label, "removed": sorted(map(loggable, removed))}
            log.info("functions the caller may not use removed from the request", extra={"fields": fields})
            if self.enforcing:
                ex.replace_request_json(new)
        return None

    # ---- the answer: the calls it proposes

    def on_response_body(self, ex: Exchange, body: bytes) -> bytes:
        status = ex.status or 0
        if not 200 <= status < 300 or not ex.protocol.may_propose_calls(body):
            return body
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        verdicts = self._judging(ex)
        calls = ex.protocol.body_tool_calls(payload)
        denied = [name for i, name in enumerate(calls) if verdicts.judge(("body", i), name)]
        self._report(ex)
        if denied:
            err = refusal(denied[0])
            if self.enforcing:
                ex.error = err
                raise err
        elif verdicts.refused and verdicts.action == "flag" and self.enforcing:
            names = sorted({_HEADER_UNSAFE.sub("?", loggable(n)) or "?" for n in verdicts.refused.values()})
            ex.response_headers[FLAG_HEADER] = ",".join(names[:MAX_FLAGGED_IN_HEADER])
        return body

    def on_response_event(self, ex: Exchange, event: SSEEvent) -> list[SSEEvent]:
        parts = ex.protocol.event_tool_calls(event)
        if self._gate is None:
            if not parts:
                return [event]
            config = self._factory.config
            self._gate = CallGate(self._judging(ex), config.max_held_events, config.max_held_bytes)
        gate = self._gate
        if gate.denied is not None:
            return []
        out = gate.event(event, parts)
        if gate.held and ex.protocol.is_terminal_event(event):  # nothing comes after it: decide now
            out = gate.end()
        return self._after(ex, out)

    def on_response_end(self, ex: Exchange) -> list[SSEEvent]:
        if self._gate is None or self._gate.denied is not None:
            return []
        return self._after(ex, self._gate.end())

    def _after(self, ex: Exchange, out: list[SSEEvent]) -> list[SSEEvent]:
        gate = self._gate
        if gate is None or gate.denied is None or self._reported:
            return out
        self._report(ex)
        err = refusal(gate.denied)
        if self.enforcing:
            ex.error = err
        return [ex.protocol.stream_error_event(err)]

    def _report(self, ex: Exchange) -> None:
        """Once per answer: the decision on the exchange and, for calls the caller may not use, a log line."""
        verdicts = self._verdicts
        if self._reported or verdicts is None or not verdicts.refused:
            return
        self._reported = True
        decision = verdicts.refused_decision
        self.decide(ex, decision)
        functions = sorted({loggable(name) for name in verdicts.refused.values()})
        fields = {"request_id": ex.request_id, "route": ex.route.label, "functions": functions}
        fields |= {"decision": decision, "mode": self.mode}
        log.warning("the model proposed functions the caller may not use", extra={"fields": fields})

    async def on_complete(self, ex: Exchange) -> None:
        verdicts = self._verdicts
        if verdicts is None:
            return
        if self._gate is not None:  # a stream that broke or a caller that left: what was seen still counts
            self._report(ex)
        metric = self._factory.services.metrics.tool_calls_proposed
        for decision in verdicts.decisions():
            label = decision if self.enforcing or decision == "allowed" else f"shadow_{decision}"
            metric.labels(self._factory.route_label, label).inc()


class ToolCallsFactory(StageFactory):
    stage = ToolCallsStage
    observes_response: ClassVar[bool] = True

    def __init__(self, config: ToolCallsConfig, rules: FunctionRules, route_label: str, services: Services):
        super().__init__(config.mode)
        self.config = config
        self.rules = rules
        self.route_label = route_label
        self.services = services


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    config: ToolCallsConfig | None = ctx.stage_config(route, "tool_calls")
    if config is None or config.mode == "off" or not ctx.speaks_llm(route):
        return None
    profiles = ctx.shared("tool_calls:permissions", lambda: {n: Permissions(p) for n, p in ctx.policy.callers.items()})
    rules = ctx.shared(f"tool_calls:{id(config)}", lambda: FunctionRules(config, profiles))
    return ToolCallsFactory(config, rules, route.label, ctx.services)

"""Tool governance: each tool call on an `mcp` or `http` route with a `tool:` name, checked, bounded and counted.

Between the cache and redaction in the chain. On an MCP route (JSON-RPC over streamable
HTTP) it reads each POST's messages (one, or a batch): a `tools/call` the caller may not
use (`callers.<profile>.tools`, `server:tool` globs, the route's `tool:` being the server),
whose routing headers disagree with its body, whose arguments break the tool's
`inputSchema`, whose tool is over its rate limit or has its breaker open, is answered by
the proxy with a JSON-RPC error and never reaches the server; a batch with one refused
call is refused whole. `tools/list` answers (JSON or SSE) lose the tools the caller may
not call, and their schemas are remembered for the session, across policy reloads (what the
caller may call is always the serving policy's). Everything else (other
methods, notifications, GET streams, DELETE) passes through untouched. Results are
redacted by the redaction stage, which runs after this one on the way back.

On an http tool route the request body may have to satisfy a JSON Schema (a 400 naming
the field); the tool's timeout, rate limit and breaker apply the same way. Every call is
counted per server, tool and outcome, timed, and its tool and outcome go to the ledger.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.auth.permissions import Permissions
from proxy.errors import BadRequest, RateLimited, ServiceUnavailable
from proxy.exchange import Exchange, Reply, ToolCall
from proxy.forward.breaker import CircuitBreaker, Permit
from proxy.limits.context import ANONYMOUS, LimitsContext, limits_context
from proxy.limits.headers import retry_headers
from proxy.pipeline import Stage, StageFactory
from proxy.policy.schema import Route
from proxy.protocols import jsonrpc
from proxy.protocols.sse import SSEEvent
from proxy.services import Services
from proxy.tools import guards
from proxy.tools.arguments import body_problem, compile_schema, library, problem
from proxy.tools.config import ToolGovConfig, ToolSettings
from proxy.tools.schemas import SchemaCache, SessionKey

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext

SESSION_HEADER = "mcp-session-id"
REACHED = frozenset({"ok", "tool_error", "rpc_error", "timeout", "upstream_error"})  # outcomes the server saw
FAILED = frozenset({"timeout", "upstream_error"})  # what a tool's breaker counts against it
_NO_SETTINGS = ToolSettings()


@dataclass(slots=True)
class _Call:
    """One `tools/call` of this exchange (or the http tool call), until its outcome is known."""

    tool: str  # the bounded label
    settings: ToolSettings
    outcome: str | None = None
    latency_s: float | None = None
    breaker: CircuitBreaker | None = None
    permit: Permit | None = None


class _Refusal(Exception):
    def __init__(self, outcome: str, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.outcome, self.code, self.message, self.data = outcome, code, message, data


class ToolGovStage(Stage):
    name: ClassVar[str] = "toolgov"

    def __init__(self, factory: ToolGovFactory):
        super().__init__(factory.mode)
        self._f = factory
        self._calls: dict[jsonrpc.Id, _Call] = {}
        self._lists: set[jsonrpc.Id] = set()
        self._session: SessionKey = ("", "", "")
        self._permissions: Permissions | None = None

    # ---- requests

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        f = self._f
        caller = ex.caller.name if ex.caller is not None else ANONYMOUS
        # No caller (a route with `auth: none`): no allowlist to apply, as the auth stage applies none.
        self._permissions = f.permissions.get(ex.caller.profile) if ex.caller is not None else None
        self._session = (f.server, caller, ex.headers.get(SESSION_HEADER, "")[:256])
        if not f.mcp:
            return await self._http_call(ex, caller)
        if ex.method != "POST" or not ex.body:
            return None
        try:
            messages, batch = jsonrpc.parse_body(ex.body)
        except jsonrpc.NotJsonRpc as err:  # what the proxy cannot read, it does not forward
            self.decide(ex, "malformed")
            body = jsonrpc.answer_body([jsonrpc.error(None, err.code, str(err))], False)
            return Reply(400, body, reason="malformed_jsonrpc")
        refusals: dict[int, _Refusal] = {}
        for index, message in enumerate(messages):
            if message.method == "tools/list" and message.is_request:
                self._lists.add(message.id)
            elif message.method == "tools/call" and message.is_request:
                try:
                    await self._call(ex, message, caller, single=not batch)
                except _Refusal as refusal:
                    refusals[index] = refusal
        if not refusals:
            self._time_limit(ex)
            return None
        for refusal in refusals.values():
            self.decide(ex, f"refused:{refusal.outcome}")
        if not self.enforcing:
            self._time_limit(ex)
            return None
        self._give_back()
        errors = [
            jsonrpc.error(m.id, r.code, r.message, r.data)
            if (r := refusals.get(i)) is not None
            else jsonrpc.error(m.id, jsonrpc.BATCH_REFUSED, "not sent: another request of this batch was refused")
            for i, m in enumerate(messages)
            if m.is_request
        ]
        return Reply(200, jsonrpc.answer_body(errors, batch), reason="tool_refused")

    async def _call(self, ex: Exchange, message: jsonrpc.Message, caller: str, single: bool) -> None:
        f = self._f
        params = message.params
        name = params.get("name")
        if not isinstance(name, str):
            return  # the server answers a malformed call itself
        label = f.labels.label(f.server, name)
        call = self._calls[message.id] = _Call(label, f.config.settings_for(name) or _NO_SETTINGS)
        if ex.tool_call is None:
            ex.tool_call = ToolCall(f.server, label)

        def refuse(outcome: str, code: int, text: str, data: Any = None) -> _Refusal:
            if self.enforcing:  # in shadow mode the call goes on, and its answer says how it ended
                call.outcome = outcome
                if ex.tool_call is not None and ex.tool_call.outcome is None:
                    ex.tool_call.outcome = outcome
            return _Refusal(outcome, code, text, data)

        shown = name[:128]
        if not self._may_call(name):
            raise refuse("forbidden", jsonrpc.TOOL_NOT_ALLOWED, f"the caller may not call tool '{f.server}:{shown}'")
        if single and not jsonrpc.headers_agree(ex.headers, message.method, name):
            raise refuse(
                "header_mismatch", jsonrpc.HEADER_MISMATCH, "the Mcp-Method or Mcp-Name header does not match the body"
            )
        if f.config.validate_arguments:
            listed, validator = f.schemas.validator(self._session, name)
            arguments = params.get("arguments", {})
            wrong = problem(validator, arguments, "arguments") if validator is not None else None
            if wrong is not None:
                text = f"invalid arguments for tool '{shown}': {wrong}"
                raise refuse("invalid_arguments", jsonrpc.INVALID_PARAMS, text)
            if not listed:
                self.decide(ex, "unchecked_arguments")
        await self._guard(ex, call, caller, refuse)

    async def _guard(self, ex: Exchange, call: _Call, caller: str, refuse: Any) -> None:
        """The tool's breaker and rate limit; the timeout is applied once every call is admitted."""
        f = self._f
        breaker = guards.breaker(f.services, f.server, call.tool, call.settings)
        if breaker is not None:
            permit = breaker.allow()
            if permit is None:
                wait = max(1.0, breaker.retry_after_s())
                text = f"tool '{f.server}:{call.tool}' is unavailable (circuit open); retry in {wait:.0f}s"
                raise refuse("circuit_open", jsonrpc.TOOL_UNAVAILABLE, text, {"retry_after_s": round(wait, 3)})
            call.breaker, call.permit = breaker, permit
        decision = await guards.admit(f.limits, caller, f.server, call.tool, call.settings)
        if decision is not None and not decision.admitted:
            limit, verdict = decision.binding()
            wait = max(verdict.retry_after_s, 0.001)
            text = f"Rate limit reached for {limit.text}. Please retry in {wait:.3f}s."
            f.services.metrics.limit_refusals.labels(
                ex.caller.profile if ex.caller else "default", limit.reason, self.mode
            ).inc()
            raise refuse("rate_limited", jsonrpc.TOOL_RATE_LIMITED, text, {"retry_after_s": round(wait, 3)})

    def _may_call(self, tool: str) -> bool:
        permissions = self._permissions
        if permissions is None:  # a route without auth: its `tool:` was the only check
            return True
        server = self._f.server
        return permissions.may_use_tool(server) or permissions.may_use_tool(f"{server}:{tool}")

    def _time_limit(self, ex: Exchange) -> None:
        limits = [c.settings.timeout_s for c in self._calls.values() if c.settings.timeout_s is not None]
        if limits:
            ex.time_limit_s = min(limits)

    def _give_back(self) -> None:
        """A refused request sent nothing: the probes its other calls took go back unjudged."""
        for call in self._calls.values():
            if call.breaker is not None and call.permit is not None:
                call.breaker.release(call.permit)
                call.permit = None

    async def _http_call(self, ex: Exchange, caller: str) -> Reply | None:
        f = self._f
        server = f.server
        call = self._calls[None] = _Call(f.labels.label(server, server), f.config.settings_for(server) or _NO_SETTINGS)
        ex.tool_call = ToolCall(server, call.tool)
        if f.body_validator is not None:
            wrong = body_problem(ex.body, f.body_validator)
            if wrong is not None:
                self.decide(ex, "refused:invalid_arguments")
                if self.enforcing:
                    call.outcome = ex.tool_call.outcome = "invalid_arguments"
                    raise BadRequest(
                        f"the request body does not match the tool's schema: {wrong}", code="invalid_tool_body"
                    )

        def refuse(outcome: str, code: int, text: str, data: Any = None) -> _Refusal:
            if self.enforcing and ex.tool_call is not None:
                call.outcome = ex.tool_call.outcome = outcome
            return _Refusal(outcome, code, text, data)

        try:
            await self._guard(ex, call, caller, refuse)
        except _Refusal as refusal:
            self.decide(ex, f"refused:{refusal.outcome}")
            if self.enforcing:
                wait = float((refusal.data or {}).get("retry_after_s", 1.0))
                if refusal.outcome == "rate_limited":
                    raise RateLimited(refusal.message, code="tool_rate_limited", headers=retry_headers(wait)) from None
                retry_after = {"retry-after": str(max(1, round(wait)))}
                raise ServiceUnavailable(refusal.message, code="tool_circuit_open", headers=retry_after) from None
        self._time_limit(ex)
        return None

    # ---- answers

    def on_response_event(self, ex: Exchange, event: SSEEvent) -> list[SSEEvent]:
        if not (self._lists or self._pending()):
            return [event]
        payload = event.json()
        if payload is None:
            return [event]
        payload, changed = self._answer(ex, payload)
        return [jsonrpc.with_payload(event, payload) if changed else event]

    def on_response_body(self, ex: Exchange, body: bytes) -> bytes:
        if not (self._lists or self._pending()) or "json" not in ex.response_headers.get("content-type", ""):
            return body
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        payload, changed = self._answer(ex, payload)
        return orjson.dumps(payload) if changed else body

    def _pending(self) -> bool:
        return any(call.outcome is None for call in self._calls.values())

    def _answer(self, ex: Exchange, payload: Any) -> tuple[Any, bool]:
        changed = False
        for message in jsonrpc.answer_messages(payload):  # answers only, not the server's own requests
            key = jsonrpc.answer_id(message)
            if key in self._lists and isinstance(result := message.get("result"), dict):
                changed = self._listed(ex, result) or changed
            elif (call := self._calls.get(key)) is not None and call.outcome is None:
                call.latency_s = time.perf_counter() - ex.started
                call.outcome = jsonrpc.call_outcome(message)
                if ex.tool_call is not None and ex.tool_call.outcome is None and ex.tool_call.tool == call.tool:
                    ex.tool_call.outcome = call.outcome
        return payload, changed

    def _listed(self, ex: Exchange, result: dict[str, Any]) -> bool:
        """Remembers the page's schemas; removes the tools the caller may not call. True if it removed any."""
        tools = result.get("tools")
        if not isinstance(tools, list):
            return False
        f = self._f
        f.schemas.store(self._session, tools)
        if not f.config.filter_tools_list:
            return False
        hidden = jsonrpc.keep_tools(result, self._may_call, apply=self.enforcing)
        if not hidden:
            return False
        self.decide(ex, "tools_hidden")
        if self.enforcing:
            f.services.metrics.tools_hidden.labels(f.server).inc(hidden)
        return self.enforcing

    def on_response_headers(self, ex: Exchange) -> None:
        if self._f.mcp or None not in self._calls:
            return
        call = self._calls[None]
        status = ex.status or 0
        call.latency_s = time.perf_counter() - ex.started
        call.outcome = "ok" if status < 400 else "tool_error" if status < 500 else "upstream_error"

    # ---- completion

    async def on_complete(self, ex: Exchange) -> None:
        f = self._f
        metrics = f.services.metrics
        for call in self._calls.values():
            broke = not f.mcp and call.outcome in ("ok", "tool_error") and ex.error is not None  # after the head
            if call.outcome is None or broke:
                call.outcome = ToolCall(f.server, call.tool).settle(ex)
            outcome = call.outcome
            if call.breaker is not None and call.permit is not None:
                if outcome == "client_gone":
                    call.breaker.release(call.permit)
                else:
                    call.breaker.record(call.permit, outcome not in FAILED)
            metrics.tool_calls.labels(f.server, call.tool, outcome).inc()
            if outcome != "ok":
                metrics.tool_errors.labels(f.server, outcome).inc()
            if outcome in REACHED:
                metrics.tool_seconds.labels(f.server, call.tool).observe(call.latency_s or ex.elapsed_s)


class ToolGovFactory(StageFactory):
    stage = ToolGovStage

    def __init__(
        self,
        config: ToolGovConfig,
        server: str,
        mcp: bool,
        services: Services,
        limits: LimitsContext,
        permissions: dict[str, Permissions],
        schemas: SchemaCache,
        labels: guards.ToolLabels,
    ):
        super().__init__(config.mode)
        self.config = config
        self.server = server
        self.mcp = mcp
        self.services = services
        self.limits = limits
        self.permissions = permissions
        self.schemas = schemas
        self.labels = labels
        self.body_validator = compile_schema(config.body_schema) if config.body_schema is not None else None


class McpToolGovFactory(ToolGovFactory):
    """MCP answers are read: `tools/list` filtered and remembered, each call's outcome seen."""

    observes_response: ClassVar[bool] = True


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    config: ToolGovConfig = ctx.stage_config(route, "toolgov")
    protocol = ctx.policy.upstreams[route.upstream].protocol
    if config.mode == "off" or route.tool is None or protocol not in ("mcp", "http"):
        return None
    library()  # jsonschema, imported now (the policy loads in a thread), not by the first tool call
    # Kept across reloads while their bounds stay the same: a session lists its tools once, and a
    # fresh label set would give a new set of tool names their own metric series after each reload.
    bounds = (config.max_sessions, config.max_tools_per_session, config.schema_ttl_s)
    schemas = ctx.services.kept.get("tool schemas", bounds, lambda: SchemaCache(*bounds))
    labels = ctx.services.kept.get(
        "tool labels", config.max_tool_labels, lambda: guards.ToolLabels(config.max_tool_labels)
    )
    permissions = ctx.shared(
        "toolgov:permissions", lambda: {name: Permissions(profile) for name, profile in ctx.policy.callers.items()}
    )
    factory = McpToolGovFactory if protocol == "mcp" else ToolGovFactory
    return factory(
        config, route.tool, protocol == "mcp", ctx.services, limits_context(ctx), permissions, schemas, labels
    )

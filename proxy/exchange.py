"""The Exchange: everything one request carries through the chain, typed.

Stages keep their per-request data here (or on their own per-request instance),
never in a free-form dict. The request body is kept as the bytes that arrived and is
parsed at most once, on first use; it is re-serialised only if a stage replaced it.
"""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import BadRequest, ProxyError, UpstreamTimeout
from proxy.own_size import own_size
from proxy.protocols.base import Protocol, Usage


class RouteView(typing.Protocol):
    """What an exchange's users read of its route: a compiled route (proxy/policy/compile.py)."""

    @property
    def label(self) -> str: ...
    @property
    def tool(self) -> str | None: ...
    @property
    def auth_required(self) -> bool: ...


class TraceView(typing.Protocol):
    """The request's trace when tracing is on (proxy/tracing/spans.py)."""

    def attempt(self, upstream: str, base_url: str, headers: CIMultiDict[str], model: str | None) -> Any: ...
    def end(self, ex: Exchange) -> None: ...


class Outcome(StrEnum):
    """How an exchange ended, as `on_complete` and the log line see it."""

    OK = "ok"
    LOCAL_REPLY = "local_reply"
    ERROR = "error"
    CLIENT_GONE = "client_gone"
    STREAM_BROKEN = "stream_broken"


@dataclass(slots=True, frozen=True)
class Caller:
    """Who is calling: `name` picks the caller profile; `key_id` is safe to log."""

    name: str
    key_id: str
    scopes: frozenset[str] = frozenset()
    profile: str = "default"


@dataclass(slots=True)
class Reply:
    """A local answer that ends the request phase (auth refusal, cache hit...)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    reason: str = ""


@dataclass(slots=True)
class ToolCall:
    """The tool an exchange called (the first, in a batch), for the ledger: set by the tool stage."""

    server: str
    tool: str
    outcome: str | None = None  # set when the proxy refused the call or saw its answer

    def settle(self, ex: Exchange) -> str:
        """The outcome, from how the exchange ended when no answer said it."""
        if self.outcome is None:
            error = ex.error
            if ex.outcome is Outcome.CLIENT_GONE:
                self.outcome = "client_gone"
            elif isinstance(error, UpstreamTimeout) or (error is not None and error.code == "upstream_idle_timeout"):
                self.outcome = "timeout"
            elif error is not None or (ex.status or 0) >= 500:
                self.outcome = "upstream_error"
            elif (ex.status or 0) >= 400:
                self.outcome = "tool_error"
            else:
                self.outcome = "ok"
        return self.outcome


_NOT_PARSED: Any = object()


@dataclass(slots=True, eq=False)
class Exchange:
    request_id: str
    method: str
    path: str
    """Percent-decoded: what routes match and logs show."""
    query_string: str
    headers: CIMultiDictProxy[str]
    route: RouteView
    protocol: Protocol
    raw_path: str = ""
    peer: str | None = None
    """The caller's address (the socket's), for a route that appends it to X-Forwarded-For."""
    """As the caller encoded it: what is forwarded, so `%2F` or `%3F` keep their meaning upstream."""
    body: bytes = b""
    started: float = field(default_factory=time.perf_counter)
    caller: Caller | None = None
    # Response side, filled while forwarding.
    upstream_name: str | None = None
    status: int | None = None
    response_headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    streaming: bool = False
    model_served: str | None = None
    usage: Usage = field(default_factory=Usage)
    # Accounting, filled by the usage stage; `cache_hit` by the cache stage when it answered.
    usage_estimated: bool = False
    cost_usd: float | None = None
    cache_hit: bool = False
    first_byte_at: float | None = None
    finished_at: float | None = None
    upstream_headers_at: float | None = None
    error: ProxyError | None = None
    outcome: Outcome | None = None
    # What stages decided, as (stage, decision, mode), for metrics and the log line.
    decisions: list[tuple[str, str, str]] = field(default_factory=list)
    # Values redacted, by (direction, detector): counts for metrics and the log line, never the values.
    redactions: dict[tuple[str, str], int] = field(default_factory=dict)
    trace: TraceView | None = None  # set when the policy turns tracing on (proxy/tracing/spans.py)
    time_limit_s: float | None = None
    """A stage's shorter bound on the whole exchange (a tool's timeout), counted from its start."""
    tool_call: ToolCall | None = None
    _json: Any = _NOT_PARSED
    _body_replaced: bool = False
    _response_body: bytes | None = None  # the whole response body `_response_json` was parsed from
    _response_json: Any = None

    @property
    def request_json(self) -> Any:
        """The body parsed once with orjson; malformed JSON is the caller's 400."""
        if self._json is _NOT_PARSED:
            if not self.body:
                raise BadRequest("the request body is empty; a JSON body is expected")
            try:
                self._json = orjson.loads(self.body)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"the request body is not valid JSON: {exc.msg}", code="invalid_json") from None
        return self._json

    def replace_request_json(self, value: Any) -> None:
        """Stages that rewrite the request call this; the body is re-serialised once, on forward."""
        self._json = value
        self._body_replaced = True

    def body_to_send(self) -> bytes:
        if self._body_replaced:
            self.body = own_size(orjson.dumps(self._json))  # kept for retries and while a stream lasts
            self._body_replaced = False
        return self.body

    def response_json(self, body: bytes) -> Any:
        """A whole response body parsed with orjson, once for every stage that reads the same bytes (usage, then
        redaction); a stage that returns other bytes is parsed afresh. Raises orjson.JSONDecodeError."""
        if body is not self._response_body:
            self._response_json = orjson.loads(body)
            self._response_body = body
        return self._response_json

    def forget_response_json(self) -> None:
        """A stage changed the parsed response in place (redaction): the next reader parses the bytes again."""
        self._response_body = self._response_json = None

    @property
    def has_llm_body(self) -> bool:
        """A body the route's adapter parses (an LLM request that sent one): what LLM stages act on."""
        return self.protocol.parses_json and bool(self.body)

    @property
    def model_requested(self) -> str | None:
        if not self.protocol.parses_json or self._json is _NOT_PARSED:
            return None
        return self.protocol.request_model(self._json)

    @property
    def elapsed_s(self) -> float:
        """Until the handler finished (`finished_at`), or until now while it runs."""
        end = self.finished_at if self.finished_at is not None else time.perf_counter()
        return end - self.started

    @property
    def ttfb_s(self) -> float | None:
        return None if self.first_byte_at is None else self.first_byte_at - self.started

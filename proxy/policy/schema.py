"""The policy file, as pydantic models: frozen, unknown keys rejected, every field documented.

The core (server, upstreams, routes, callers, pricing) is declared here; each component's
own settings live next to its code (proxy/auth/config.py, proxy/forward/config.py,
proxy/limits/config.py, proxy/safety/config.py) and are assembled into `Policy` here.
`agent-proxy schema` prints the JSON Schema of `Policy` for editor validation.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from proxy.accounting.config import LedgerConfig
from proxy.auth.config import AuthConfig, HmacKey
from proxy.forward.bounds import ResponseLimits, Timeouts, UpstreamPool
from proxy.forward.config import CircuitBreakerConfig, DegradedReplies, Fallback, Retries
from proxy.host_check import HostPattern, OriginPattern
from proxy.limits.config import Budget, RateLimit
from proxy.policy.base import Glob, Name, Strict
from proxy.policy.header_rules import HeaderName, HeaderValue, SecretHeaderValue
from proxy.policy.stage_order import StagesConfig
from proxy.protocols import LLM_PROTOCOLS
from proxy.state.config import StateConfig
from proxy.tracing.config import TracingConfig


class ServerConfig(Strict):
    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="Port to listen on.")
    max_body_bytes: int = Field(
        10 * 1024 * 1024, gt=0, le=1 << 30, description="Larger requests get 413 in the protocol's error shape."
    )
    reload_interval_s: float = Field(1.0, gt=0, le=3600, description="How often the policy file is checked.")
    shutdown_timeout_s: float = Field(30.0, ge=0, le=3600, description="Grace for in-flight requests on stop.")
    upstream_pool: UpstreamPool = Field(
        default_factory=UpstreamPool, description="Connections to upstreams, shared by every route (read at start)."
    )
    tracing: TracingConfig = Field(
        default_factory=TracingConfig, description="OpenTelemetry traces, off by default (read at start)."
    )
    # ---- the caller's side (proxy/edge.py): read at start, a change needs a restart (the body timeout follows
    # reloads)
    request_head_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="A request head must arrive whole within this, counted from the connection's start or from the "
        "first byte of a keep-alive request; then 408 (if any of it came) and the connection is closed.",
    )
    request_body_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="The whole body must arrive within this once its head has; then 408 and close."
    )
    keepalive_s: float = Field(
        60.0, gt=0, le=3600, description="An idle keep-alive connection from a caller is closed after this."
    )
    max_connections: int = Field(
        1024, ge=1, le=1_000_000, description="Open caller connections; past this a new one is closed at once."
    )
    max_unauthenticated_connections: int = Field(
        256,
        ge=1,
        le=1_000_000,
        description="Open connections on which no request has been identified yet; past this a new one is closed "
        "at once, while identified keep-alive connections keep working.",
    )
    max_header_bytes: int = Field(
        16384, ge=1024, le=1 << 20, description="The request line, or one header line; longer gets 400."
    )
    max_headers: int = Field(100, ge=8, le=1000, description="Header lines in one request head; more gets 400.")
    # ---- DNS rebinding and cross-site requests (proxy/host_check.py, docs/security.md)
    allowed_hosts: list[HostPattern] = Field(
        default_factory=list,
        max_length=256,
        description="Host names callers may reach the proxy by, besides those always allowed (localhost, IP "
        "literals, `host` when it is a name): e.g. a Service or Compose name. Any other Host gets 403.",
    )
    allowed_origins: list[OriginPattern] = Field(
        default_factory=list,
        max_length=256,
        description="Browser origins allowed besides the request's own, loopback and the allowed host names. "
        "A request without Origin (SDKs, non-browser clients) is judged by Host alone; any other Origin gets 403.",
    )

    @model_validator(mode="after")
    def _unauthenticated_within_total(self) -> ServerConfig:
        if self.max_unauthenticated_connections > self.max_connections:
            raise ValueError("max_unauthenticated_connections cannot exceed max_connections")
        return self


class Credentials(Strict):
    header: HeaderName = Field(description="Header the upstream expects, e.g. Authorization or x-api-key.")
    value: SecretHeaderValue = Field(description="Its value; use ${ENV_VAR} interpolation, never a literal secret.")


def _check_url(url: str) -> str:
    if url == "builtin://mock":
        return url
    if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", url):
        raise ValueError("must be an http:// or https:// URL without query or fragment, or builtin://mock")
    return url.rstrip("/")


class Upstream(Strict):
    url: str | None = Field(
        None,
        description="Base URL (http or https). `builtin://mock` starts the built-in mock upstream in-process. "
        "Give `url` or `endpoints`.",
    )
    endpoints: list[str] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Several base URLs serving the same API, balanced by least requests in flight, each with its "
        "own circuit breaker. Give `url` or `endpoints`.",
    )
    protocol: Literal["openai", "anthropic", "http", "mcp"] = "openai"
    credentials: Credentials | None = Field(None, description="Injected into every request to this upstream.")
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict, description="Extra headers sent upstream.")
    timeouts: Timeouts = Timeouts()
    limits: ResponseLimits = Field(
        default_factory=ResponseLimits, description="Bounds on what one answer of this upstream may hold."
    )
    proxy: str | None = Field(
        None,
        description="An HTTP proxy to reach this upstream through (http://[user:pass@]host:port), or `direct`. "
        "Omitted: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment, read once at policy load.",
    )
    retries: Retries = Field(
        default_factory=lambda: Retries(attempts=1),
        description="Omitted: one attempt (callers' SDKs retry already; retrying in both multiplies load in an "
        "outage). `retries: {}` turns on 3 attempts with the defaults.",
    )
    circuit_breaker: CircuitBreakerConfig = Field(
        default_factory=CircuitBreakerConfig, description="One breaker per endpoint, on by default."
    )
    sign_requests: bool = Field(False, description="Sign requests with the caller identity (tool servers).")
    signing_key: HmacKey | None = Field(
        None, description="Secret shared with this upstream alone, for `sign_requests` (see docs/auth.md)."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return None if url is None else _check_url(url)

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, proxy: str | None) -> str | None:
        if proxy is None or proxy == "direct":
            return proxy
        if not re.match(r"^http://[^/\s?#]+/?$", proxy):
            raise ValueError("must be `direct` or an http:// proxy URL (host and port, no path)")
        return proxy.rstrip("/")

    @field_validator("endpoints")
    @classmethod
    def _http_urls(cls, urls: list[str] | None) -> list[str] | None:
        if urls is None:
            return None
        checked = [_check_url(url) for url in urls]
        if len(set(checked)) != len(checked):
            raise ValueError("lists the same endpoint twice")
        return checked

    @model_validator(mode="after")
    def _one_address(self) -> Upstream:
        if (self.url is None) == (self.endpoints is None):
            raise ValueError("an upstream needs exactly one of `url` or `endpoints`")
        return self

    @model_validator(mode="after")
    def _signing_needs_a_key(self) -> Upstream:  # auth (proxy/auth/signing.py)
        if self.sign_requests and self.signing_key is None:
            raise ValueError("`sign_requests: true` needs a `signing_key: {id, secret}` shared with the upstream")
        return self

    @property
    def urls(self) -> list[str]:
        return self.endpoints if self.endpoints is not None else [self.url]  # type: ignore[list-item]


class Route(Strict):
    name: Name | None = Field(None, description="Label in metrics and logs; defaults to the path or prefix.")
    path: str | None = Field(None, description="Exact request path to match.")
    prefix: str | None = Field(None, description="Path prefix to match.")
    methods: list[Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]] | None = None
    upstream: str
    fallbacks: list[Fallback] = Field(
        default_factory=list,
        max_length=16,
        description="Upstreams tried in order when the primary's breakers are open or its retries are spent: "
        "names, or {upstream, model} to rewrite the model for that upstream. Same protocol as the primary.",
    )
    retry_unsafe: bool = Field(
        False,
        description="http/mcp routes: also retry (and fall back) non-idempotent methods such as POST. "
        "LLM protocols always may.",
    )
    degraded: DegradedReplies | None = Field(
        None, description="Answer as the assistant, with a fixed message, instead of an error when everything failed."
    )
    rewrite_prefix: str | None = Field(None, description="Replaces the matched prefix in the forwarded path.")
    tool: Name | None = Field(None, description="Tool name for tool allowlists.")
    auth: Literal["required", "none"] = Field("required", description="`none` only for trusted local traffic.")
    forwarded_headers: Literal["strip", "append"] = Field(
        "strip",
        description="X-Forwarded-*, Forwarded and X-Real-IP from the caller: `strip` removes them (a sidecar's "
        "caller is local); `append` keeps them and adds the caller's address, as a reverse proxy behind a trusted "
        "one does.",
    )
    stages: StagesConfig | None = Field(None, description="Overrides of the `stages:` defaults for this route.")
    allowed_hosts: list[HostPattern] | None = Field(
        None, max_length=256, description="Replaces `server.allowed_hosts` for this route."
    )
    allowed_origins: list[OriginPattern] | None = Field(
        None, max_length=256, description="Replaces `server.allowed_origins` for this route."
    )

    @model_validator(mode="after")
    def _one_matcher(self) -> Route:
        if (self.path is None) == (self.prefix is None):
            raise ValueError("a route needs exactly one of `path` or `prefix`")
        for value in (self.path, self.prefix):
            if value is not None and not value.startswith("/"):
                raise ValueError("`path` and `prefix` start with /")
        if self.rewrite_prefix is not None and self.prefix is None:
            raise ValueError("`rewrite_prefix` goes with `prefix`")
        return self

    @property
    def fallback_names(self) -> list[str]:
        return [fallback.upstream for fallback in self.fallbacks]

    @property
    def label(self) -> str:
        return self.name or self.path or self.prefix or "?"


class CallerProfile(Strict):
    rate_limit: RateLimit | None = Field(
        None, description="Requests, tokens and concurrency limits of each caller of this profile (docs/limits.md)."
    )
    budget: Budget | None = Field(None, description="USD per day and per month of each caller of this profile.")
    models: list[Glob] = Field(
        default_factory=lambda: ["*"],
        max_length=256,
        description="Glob patterns of the models this caller may name in a request body (openai and anthropic).",
    )
    routes: list[Glob] = Field(
        default_factory=lambda: ["*"], max_length=256, description="Route names (globs) this caller may use."
    )
    tools: list[Glob] = Field(
        default_factory=list,
        max_length=256,
        description="Tool names (globs, `server:tool` for one tool of a server) this caller may use.",
    )


class Pricing(Strict):
    input: float = Field(ge=0, allow_inf_nan=False, description="USD per 1M input tokens.")
    output: float = Field(ge=0, allow_inf_nan=False, description="USD per 1M output tokens.")
    cached_input: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="USD per 1M cached input tokens; default: input."
    )
    cache_write: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="USD per 1M cache-write tokens; default: input."
    )


class Policy(Strict):
    version: Literal[1] = 1
    server: ServerConfig = ServerConfig()
    state: StateConfig = StateConfig()
    ledger: LedgerConfig = LedgerConfig()
    upstreams: dict[Name, Upstream] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)
    auth: AuthConfig = AuthConfig()
    callers: dict[Name, CallerProfile] = Field(default_factory=lambda: {"default": CallerProfile()})
    stages: StagesConfig = StagesConfig()
    pricing: dict[str, Pricing] = Field(
        default_factory=dict,
        description="USD per 1M tokens by model name, over the shipped default table; dated variants match their base.",
    )

    @model_validator(mode="after")
    def _references(self) -> Policy:
        # ctx["field"] points the loader at the offending field; messages never echo the (maybe interpolated) value.
        for index, route in enumerate(self.routes):
            fallbacks = enumerate(route.fallback_names)
            named = [(("upstream",), route.upstream), *((("fallbacks", i), n) for i, n in fallbacks)]
            for field, name in named:
                if name not in self.upstreams:
                    raise PydanticCustomError(
                        "unknown_upstream",
                        "names an upstream that is not defined in `upstreams` (defined: {defined})",
                        {"defined": ", ".join(self.upstreams), "field": ("routes", index, *field)},
                    )
        for index, key in enumerate(self.auth.static_keys):
            if key.caller not in self.callers and "default" not in self.callers:
                raise PydanticCustomError(
                    "unknown_caller",
                    "names a caller that has no profile in `callers`, and `callers` has no `default`",
                    {"field": ("auth", "static_keys", index, "caller")},
                )
        return self

    @model_validator(mode="after")
    def _fallbacks_speak_the_route_protocol(self) -> Policy:
        """A fallback answers in the primary's shape; model rewrites and degraded replies need an LLM protocol."""
        for index, route in enumerate(self.routes):
            primary = self.upstreams.get(route.upstream)
            if primary is None:
                continue
            llm = primary.protocol in LLM_PROTOCOLS
            for i, fallback in enumerate(route.fallbacks):
                other = self.upstreams.get(fallback.upstream)
                if other is not None and other.protocol != primary.protocol:
                    raise PydanticCustomError(
                        "fallback_protocol",
                        "a fallback must speak the primary upstream's protocol ({protocol})",
                        {"protocol": primary.protocol, "field": ("routes", index, "fallbacks", i)},
                    )
                if fallback.model is not None and not llm:
                    raise PydanticCustomError(
                        "fallback_model",
                        "a model rewrite needs an openai or anthropic upstream",
                        {"field": ("routes", index, "fallbacks", i, "model")},
                    )
            if route.degraded is not None and not llm:
                raise PydanticCustomError(
                    "degraded_protocol",
                    "degraded replies need an openai or anthropic upstream",
                    {"field": ("routes", index, "degraded")},
                )
        return self

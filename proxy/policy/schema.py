"""The policy file, as pydantic models: frozen, unknown keys rejected, every field documented.

`agent-proxy schema` prints the JSON Schema of `Policy` for editor validation.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

Mode = Literal["enforce", "shadow", "off"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(Strict):
    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="Port to listen on.")
    max_body_bytes: int = Field(
        10 * 1024 * 1024, gt=0, le=1 << 30, description="Larger requests get 413 in the protocol's error shape."
    )
    reload_interval_s: float = Field(1.0, gt=0, le=3600, description="How often the policy file is checked.")
    shutdown_timeout_s: float = Field(30.0, ge=0, le=3600, description="Grace for in-flight requests on stop.")


class StateConfig(Strict):
    backend: Literal["memory", "redis"] = Field("memory", description="Where shared counters live.")
    redis_url: str | None = Field(None, description="redis://host:port/db when backend is redis.")
    on_backend_error: Literal["fail_open", "fail_closed"] = Field(
        "fail_open", description="fail_open admits and counts it; fail_closed answers 503."
    )

    @model_validator(mode="after")
    def _redis_needs_url(self) -> StateConfig:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("state.backend 'redis' needs state.redis_url")
        return self


class LedgerConfig(Strict):
    path: str | None = Field(None, description="SQLite file of per-request usage records; none disables it.")
    flush_interval_ms: int = Field(
        200, ge=10, le=60_000, description="Records are committed in one batch this often; a kill -9 loses at most one."
    )


class Credentials(Strict):
    header: str = Field(description="Header the upstream expects, e.g. Authorization or x-api-key.")
    value: SecretStr = Field(description="Its value; use ${ENV_VAR} interpolation, never a literal secret.")


class Timeouts(Strict):
    connect_s: float = Field(5.0, gt=0, le=600)
    first_byte_s: float = Field(60.0, gt=0, le=3600, description="Until the response headers arrive.")
    idle_s: float = Field(30.0, gt=0, le=3600, description="Longest gap between two chunks of a response.")
    total_s: float = Field(600.0, gt=0, le=86400)


class Upstream(Strict):
    url: str = Field(
        description="Base URL (http or https). `builtin://mock` starts the built-in mock upstream in-process."
    )
    protocol: Literal["openai", "anthropic", "http", "mcp"] = "openai"
    credentials: Credentials | None = Field(None, description="Injected into every request to this upstream.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers sent upstream.")
    timeouts: Timeouts = Timeouts()
    sign_requests: bool = Field(False, description="Sign requests with the caller identity (tool servers).")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if url == "builtin://mock":
            return url
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", url):
            raise ValueError("must be an http:// or https:// URL without query or fragment, or builtin://mock")
        return url.rstrip("/")


class UsageConfig(Strict):
    """Token and cost accounting: metrics, the ledger record and the log line's figures."""

    mode: Mode = Field("enforce", description="`off` stops accounting on a route; `shadow` never asks for usage.")
    stream_usage: bool = Field(
        True,
        description="Ask OpenAI-style upstreams for usage on streams (stream_options.include_usage) and remove "
        "it again from what the caller receives, when the caller did not ask for it.",
    )
    estimate: bool = Field(True, description="Count tokens locally (marked estimated) when the upstream reports none.")


class StagesConfig(Strict):
    """Stage settings: under `stages:` the defaults for every route, under a route its overrides.

    Each field is one stage's slice of the policy; a route's value replaces the default whole.
    """

    usage: UsageConfig = Field(default_factory=UsageConfig, description="Token and cost accounting.")


class Route(Strict):
    name: Name | None = Field(None, description="Label in metrics and logs; defaults to the path or prefix.")
    path: str | None = Field(None, description="Exact request path to match.")
    prefix: str | None = Field(None, description="Path prefix to match.")
    methods: list[Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]] | None = None
    upstream: str
    fallbacks: list[str] = Field(default_factory=list)
    rewrite_prefix: str | None = Field(None, description="Replaces the matched prefix in the forwarded path.")
    tool: Name | None = Field(None, description="Tool name for tool allowlists.")
    auth: Literal["required", "none"] = Field("required", description="`none` only for trusted local traffic.")
    stages: StagesConfig | None = Field(None, description="Overrides of the `stages:` defaults for this route.")

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
    def label(self) -> str:
        return self.name or self.path or self.prefix or "?"


class StaticKey(Strict):
    caller: Name
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the key; never the key itself.")
    id: Name | None = Field(None, description="Key id shown in logs; defaults to the hash's first 8 digits.")
    scopes: list[str] = Field(default_factory=list, description="e.g. admin")


class AuthConfig(Strict):
    mode: Mode = "enforce"
    static_keys: list[StaticKey] = Field(default_factory=list)


class RateLimit(Strict):
    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    concurrent: int | None = Field(None, gt=0)


class Budget(Strict):
    usd_per_day: float | None = Field(None, gt=0)
    usd_per_month: float | None = Field(None, gt=0)


class CallerProfile(Strict):
    rate_limit: RateLimit | None = None
    budget: Budget | None = None
    models: list[str] = Field(default_factory=lambda: ["*"], description="Glob patterns of allowed models.")
    routes: list[str] = Field(default_factory=lambda: ["*"], description="Route names (globs) allowed.")
    tools: list[str] = Field(default_factory=list, description="Tool names (globs) allowed.")


class Pricing(Strict):
    input: float = Field(ge=0, description="USD per 1M input tokens.")
    output: float = Field(ge=0, description="USD per 1M output tokens.")
    cached_input: float | None = Field(None, ge=0, description="USD per 1M cached input tokens; default: input.")
    cache_write: float | None = Field(None, ge=0, description="USD per 1M cache-write tokens; default: input.")


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
            named = [(("upstream",), route.upstream), *((("fallbacks", i), n) for i, n in enumerate(route.fallbacks))]
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

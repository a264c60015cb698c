"""The policy file, as pydantic models: frozen, unknown keys rejected, every field documented.

`agent-proxy schema` prints the JSON Schema of `Policy` for editor validation.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from proxy.limits.config import Budget, RateLimit, RateLimitStageConfig, RunsConfig
from proxy.safety.config import InputConfig, RedactionConfig

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
    # ---- limits (proxy/state/, proxy/limits/)
    redis_timeout_ms: int = Field(
        250, ge=1, le=10_000, description="Longest wait for one Redis call; then `on_backend_error` decides."
    )
    key_prefix: str = Field(
        "agent-proxy:",
        pattern=r"^[A-Za-z0-9_.:{}-]{0,64}$",
        description="Prefix of every Redis key, so several proxies (or policies) can share one Redis apart.",
    )
    # ---- end limits

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


# ---- auth: shared secrets (proxy/auth/) -----------------------------------------------------------------------


class HmacKey(Strict):
    """A named HMAC-SHA256 secret: the id travels with what it signs, so several can be listed while rotating."""

    id: Name = Field(description="Key id carried by what this secret signs; picks the secret when verifying.")
    secret: SecretStr = Field(
        min_length=32, max_length=1024, description="At least 32 characters; use ${ENV_VAR} interpolation."
    )


# ---- end auth: shared secrets -----------------------------------------------------------------------------------


# ---- resilience (proxy/resilience/, proxy/upstream.py) ----------------------------------------------------------

RetryOn = Annotated[int, Field(ge=400, le=599)] | Literal["connect_error", "timeout"]
_RETRYABLE_4XX = frozenset({408, 425, 429})


class Retries(Strict):
    """Retries of one upstream, with capped exponential backoff and full jitter, before any byte reached the caller."""

    attempts: int = Field(3, ge=1, le=10, description="Tries in all, the first included; 1 means no retry.")
    backoff_base_s: float = Field(0.25, gt=0, le=60, description="Backoff ceiling after the first failure.")
    backoff_max_s: float = Field(8.0, gt=0, le=300, description="Cap of the backoff ceiling, which doubles per try.")
    on: list[RetryOn] = Field(
        default_factory=lambda: [429, 500, 502, 503, 504, "connect_error", "timeout"],
        max_length=64,
        description="What is retried: response statuses (408, 425, 429, 5xx), `connect_error` (refused or reset "
        "before the response head), `timeout` (no response head in time). Also what sends a request to the fallbacks.",
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: object) -> object:
        """YAML 1.1 reads a bare `on:` key as the boolean true."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data

    @field_validator("on")
    @classmethod
    def _statuses(cls, on: list[int | str]) -> list[int | str]:
        for item in on:
            if isinstance(item, int) and item < 500 and item not in _RETRYABLE_4XX:
                raise ValueError(f"{item} is the caller's error and is never retried (4xx allowed: 408, 425, 429)")
        return on


class CircuitBreakerConfig(Strict):
    """A breaker per endpoint: opens after consecutive failures, probes again after the recovery time."""

    enabled: bool = Field(True, description="`false` forwards whatever happens.")
    failure_threshold: int = Field(5, ge=1, le=1000, description="Consecutive failures that open the breaker.")
    recovery_timeout_s: float = Field(30.0, gt=0, le=3600, description="How long it stays open before probing.")
    half_open_max_calls: int = Field(1, ge=1, le=100, description="Probes let through at once while half-open.")
    failure_statuses: list[Annotated[int, Field(ge=408, le=599)]] = Field(
        default_factory=lambda: [500, 502, 503, 504],
        max_length=64,
        description="Response statuses that count as failures (5xx, 408, 429); connection errors, timeouts and "
        "streams that break mid-way always do, a caller's 4xx never does.",
    )

    @field_validator("failure_statuses")
    @classmethod
    def _no_caller_errors(cls, statuses: list[int]) -> list[int]:
        for status in statuses:
            if status < 500 and status not in (408, 429):
                raise ValueError(f"{status} is the caller's error and never counts against an upstream")
        return statuses


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
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers sent upstream.")
    timeouts: Timeouts = Timeouts()
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


# ---- end resilience -----------------------------------------------------------------------------------------------


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

    input: InputConfig | None = Field(
        None, description="Input checks: size, blocked patterns, control characters, request shape (proxy/safety/)."
    )
    redaction: RedactionConfig = Field(
        default_factory=RedactionConfig, description="PII and secret redaction, both directions (proxy/safety/)."
    )
    usage: UsageConfig = Field(default_factory=UsageConfig, description="Token and cost accounting.")
    ratelimit: RateLimitStageConfig = Field(
        default_factory=RateLimitStageConfig,
        description="How `callers.*.rate_limit` and `.budget` are enforced, and limits per route (proxy/limits/).",
    )
    runs: RunsConfig | None = Field(
        None, description="Agent runs: limits per run and the loop guard (proxy/limits/); unset: off."
    )


def _name_or_object(schema: dict[str, Any], cls: type) -> None:
    """In the JSON Schema, as in YAML: a fallback is an upstream name or an object."""
    whole = dict(schema)
    schema.clear()
    schema["anyOf"] = [{"type": "string", "description": "An upstream name."}, whole]


class Fallback(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_name_or_object)

    upstream: str = Field(description="An upstream defined in `upstreams`.")
    model: str | None = Field(
        None, min_length=1, max_length=256, description="Model name the request is sent with to this upstream."
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_name(cls, data: object) -> object:
        return {"upstream": data} if isinstance(data, str) else data


class DegradedReplies(Strict):
    """Per error kind, a message returned as a normal assistant reply (openai and anthropic routes)."""

    rate_limited: str | None = Field(None, max_length=8000, description="When the upstreams answered 429.")
    timeout: str | None = Field(None, max_length=8000, description="When the upstreams did not answer in time.")
    upstream_error: str | None = Field(
        None, max_length=8000, description="When the upstreams failed (5xx, connection errors, open breakers)."
    )


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
    def fallback_names(self) -> list[str]:
        return [fallback.upstream for fallback in self.fallbacks]

    @property
    def label(self) -> str:
        return self.name or self.path or self.prefix or "?"


# ---- auth (proxy/auth/, proxy/stages/auth.py) -------------------------------------------------------------------

Scope = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/-]{1,64}$")]
Glob = Annotated[str, Field(min_length=1, max_length=256)]
JwtAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]


class StaticKey(Strict):
    caller: Name
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the key; never the key itself.")
    id: Name | None = Field(None, description="Key id shown in logs; defaults to the hash's first 8 digits.")
    scopes: list[Scope] = Field(default_factory=list, max_length=64, description="e.g. admin")


class JwtConfig(Strict):
    """Bearer JWTs from an identity provider, verified with exactly one key source."""

    issuer: str | None = Field(None, max_length=1024, description="Required `iss`; unset: not checked.")
    audience: str | Annotated[list[str], Field(min_length=1, max_length=32)] | None = Field(
        None, max_length=1024, description="Accepted `aud` value(s); unset: tokens that carry an `aud` are refused."
    )
    algorithms: list[JwtAlgorithm] = Field(
        default_factory=lambda: ["RS256"],
        min_length=1,
        max_length=13,
        description="Allowlist; `none` is never accepted, and HS* only with `secret`, the others only with keys.",
    )
    jwks_file: str | None = Field(None, min_length=1, description="JWKS JSON file, read at policy load.")
    jwks_url: str | None = Field(
        None, pattern=r"^https?://\S+$", max_length=2048, description="JWKS URL: cached, refetched on an unknown kid."
    )
    public_key_file: str | None = Field(None, min_length=1, description="PEM public key file, read at policy load.")
    secret: SecretStr | None = Field(
        None, min_length=32, max_length=1024, description="Shared secret for HS* algorithms; use ${ENV_VAR}."
    )
    caller_claim: str = Field("sub", min_length=1, max_length=128, description="Claim naming the caller.")
    scopes_claim: str = Field(
        "scope", min_length=1, max_length=128, description="Claim with the scopes: a space-separated string or a list."
    )
    leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat.")
    jwks_timeout_s: float = Field(3.0, gt=0, le=30, description="Longest wait for the JWKS URL; then 401.")
    jwks_cache_s: float = Field(300.0, ge=1, le=86400, description="JWKS URL keys are refetched after this long.")
    jwks_min_refresh_s: float = Field(
        10.0, ge=0, le=3600, description="Least time between two JWKS fetches (unknown kids cannot hammer the IdP)."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtConfig:
        sources = [self.jwks_file, self.jwks_url, self.public_key_file, self.secret]
        if sum(source is not None for source in sources) != 1:
            raise ValueError("needs exactly one key source: jwks_file, jwks_url, public_key_file or secret")
        symmetric = {alg.startswith("HS") for alg in self.algorithms}
        if self.secret is not None and symmetric != {True}:
            raise ValueError("with `secret`, only HS256/HS384/HS512 may be listed in `algorithms`")
        if self.secret is None and True in symmetric:
            raise ValueError("HS* algorithms need `secret`; with public keys they would allow HS/RS confusion")
        return self


class AuthConfig(Strict):
    mode: Mode = Field("enforce", description="`shadow` records refusals without enforcing them; `off` skips auth.")
    hmac_keys: list[HmacKey] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets of keys minted by `agent-proxy keys mint`; the first signs new keys, all verify.",
    )
    jwt: JwtConfig | None = Field(None, description="Accept JWT bearer tokens.")
    static_keys: list[StaticKey] = Field(default_factory=list, max_length=10_000)
    revoked: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list,
        max_length=100_000,
        description="Key ids refused from now on, as logs show them: a minted key's id, a JWT's jti, a static key id.",
    )

    @field_validator("hmac_keys")
    @classmethod
    def _unique_ids(cls, keys: list[HmacKey]) -> list[HmacKey]:
        ids = [key.id for key in keys]
        if len(set(ids)) != len(ids):
            raise ValueError("two hmac_keys share an id")
        return keys


# ---- end auth ---------------------------------------------------------------------------------------------------


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
            llm = primary.protocol in ("openai", "anthropic")
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

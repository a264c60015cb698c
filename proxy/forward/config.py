"""The policy's resilience settings: retries and breakers per upstream, fallbacks and degraded replies per route."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from proxy.policy.base import Strict

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

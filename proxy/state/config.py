"""The policy's `state:` settings: where the limits' shared counters live, and what a Redis fault does."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from proxy.policy.base import Strict


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
    lease_s: float = Field(
        20.0,
        ge=2,
        le=600,
        description="A concurrency slot's lease on Redis, renewed while its response lives: a replica that dies "
        "gives its slots back within this long.",
    )
    max_pending_settlements: int = Field(
        10_000,
        ge=100,
        le=1_000_000,
        description="Slot releases and corrections kept in memory for retry while Redis is unreachable; past this "
        "the oldest is dropped (and counted).",
    )
    # ---- end limits

    @model_validator(mode="after")
    def _redis_needs_url(self) -> StateConfig:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("state.backend 'redis' needs state.redis_url")
        return self

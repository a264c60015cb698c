"""The cache stage's settings (`stages.cache`) and its declaration."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from proxy.cache.semantic_config import SemanticConfig
from proxy.policy.base import Mode, Strict
from proxy.policy.stage_spec import MetricSpec, StageSpec

Scope = Literal["caller", "team", "global"]


class CacheConfig(Strict):
    """Answers to repeated requests from a cache, never across the scope's boundary."""

    mode: Mode = Field("enforce", description="`shadow` looks up and stores but never answers from the cache.")
    scope: Scope = Field(
        "caller",
        description="Who shares entries: `caller` (one caller name), `team` (the callers of one caller profile) "
        "or `global` (every caller of the route).",
    )
    ttl_s: float = Field(300.0, ge=1, le=30 * 86400, description="How long an entry is served after it was stored.")
    max_entries: int = Field(
        10_000, ge=1, le=10_000_000, description="Entries held in memory; past it the least recently used go first."
    )
    max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=64 * 1024,
        le=64 * 1024**3,
        description="Bytes of entries held in memory; past it the least recently used go first.",
    )
    max_entry_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="A larger answer (body, or a stream's events) is not stored.",
    )
    max_temperature: float = Field(
        1.0,
        ge=0,
        le=2,
        description="Requests with a higher temperature are neither served nor stored (BYPASS); one that sends "
        "none counts as 1.0, the providers' default.",
    )
    coalesce: bool = Field(
        True, description="Concurrent identical misses wait for the first one's answer instead of going upstream."
    )
    coalesce_wait_s: float = Field(
        60.0,
        gt=0,
        le=600,
        description="Longest wait for that answer; then, or when the first one fails, a waiter goes upstream itself.",
    )
    semantic: SemanticConfig = Field(
        default_factory=SemanticConfig, description="On an exact miss, look for a near-identical cached question."
    )


# route = the policy's route label; result = hit, semantic_hit, miss, bypass.
CACHE_STAGE = StageSpec(
    name="cache",
    implementation="proxy.stages.cache",
    settings=CacheConfig,
    default_on=False,
    description="Response cache: repeated requests answered without going upstream.",
    metrics=(
        MetricSpec(
            "cache_lookups",
            "counter",
            "agent_proxy_cache_lookups",
            "Cache lookups by route and result (hit, semantic_hit, miss, bypass).",
            ("route", "result"),
        ),
        MetricSpec(
            "cache_saved_usd",
            "counter",
            "agent_proxy_cache_saved_usd",
            "What the answers served from the cache would have cost upstream, in USD, by route and caller profile.",
            ("route", "caller"),
        ),
        MetricSpec(
            "cache_stored",
            "counter",
            "agent_proxy_cache_stored",
            "Answers stored, by route.",
            ("route",),
        ),
        MetricSpec(
            "cache_semantic_indexed",
            "counter",
            "agent_proxy_cache_semantic_indexed",
            "Stored answers whose question the semantic index took (embedded and searchable), by route.",
            ("route",),
        ),
        MetricSpec(
            "cache_backend_errors",
            "counter",
            "agent_proxy_cache_backend_errors",
            "Cache reads and writes that failed (Redis unreachable or slow); the request went on as a miss.",
            ("op",),
        ),
        MetricSpec(
            "cache_entries",
            "gauge",
            "agent_proxy_cache_entries",
            "Entries held in this process's memory caches.",
            multiprocess_mode="livesum",
        ),
        MetricSpec(
            "cache_bytes",
            "gauge",
            "agent_proxy_cache_bytes",
            "Bytes of entries held in this process's memory caches.",
            multiprocess_mode="livesum",
        ),
    ),
)

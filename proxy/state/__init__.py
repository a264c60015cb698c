"""Shared state for limits: a `Store` (memory or Redis) opened once per process from `state:`."""

from __future__ import annotations

from proxy.metrics import Metrics
from proxy.state.base import (
    BackendUnavailable,
    Change,
    Check,
    Once,
    Quota,
    QuotaDelta,
    Rate,
    RateDelta,
    Release,
    Renew,
    Slot,
    Store,
    Undo,
    Verdict,
    admitted,
)
from proxy.state.config import StateConfig
from proxy.state.memory import MemoryStore


def open_store(config: StateConfig, metrics: Metrics | None = None) -> Store:
    """The process-wide store; a Redis client connects lazily, on its first call."""
    store: Store
    if config.backend == "redis":
        from proxy.state.redis import RedisStore

        assert config.redis_url is not None  # the schema requires it
        store = RedisStore(
            config.redis_url,
            config.redis_timeout_ms / 1000,
            metrics,
            lease_s=config.lease_s,
            max_pending=config.max_pending_settlements,
        )
    else:
        store = MemoryStore()
    store.opened_from = config.model_dump(exclude={"on_backend_error"})  # a reload cannot switch backends
    return store


__all__ = [
    "BackendUnavailable",
    "Change",
    "Check",
    "MemoryStore",
    "Once",
    "Quota",
    "QuotaDelta",
    "Rate",
    "RateDelta",
    "Release",
    "Renew",
    "Slot",
    "Store",
    "Undo",
    "Verdict",
    "admitted",
    "open_store",
]

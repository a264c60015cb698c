"""The resilience settings of a policy, compiled into what forwarding reads per attempt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.forward.balancer import Balancer
from proxy.forward.breaker import BreakerSettings
from proxy.forward.config import CircuitBreakerConfig, Retries
from proxy.forward.registry import EndpointRegistry

if TYPE_CHECKING:
    from proxy.metrics import Metrics


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int
    base_s: float
    max_s: float
    statuses: frozenset[int]
    on_connect_error: bool
    on_timeout: bool

    @classmethod
    def from_config(cls, config: Retries) -> RetryPolicy:
        return cls(
            attempts=config.attempts,
            base_s=config.backoff_base_s,
            max_s=config.backoff_max_s,
            statuses=frozenset(item for item in config.on if isinstance(item, int)),
            on_connect_error="connect_error" in config.on,
            on_timeout="timeout" in config.on,
        )


def breaker_settings(config: CircuitBreakerConfig) -> BreakerSettings:
    return BreakerSettings(
        enabled=config.enabled,
        failure_threshold=config.failure_threshold,
        recovery_timeout_s=config.recovery_timeout_s,
        half_open_max_calls=config.half_open_max_calls,
    )


def build_balancer(
    registry: EndpointRegistry,
    upstream: str,
    urls: list[tuple[str, str]],
    config: CircuitBreakerConfig,
    metrics: Metrics | None,
) -> Balancer:
    """`urls`: (the URL requests go to, the URL as the policy writes it, which labels it)."""
    settings = breaker_settings(config)
    return Balancer(tuple(registry.endpoint(upstream, url, settings, metrics, label) for url, label in urls))

"""The process-wide endpoints (breaker + in-flight count), keyed by upstream name and URL.

Held by `Services`, so breakers survive policy reloads: compiling a policy looks its
endpoints up here and applies the policy's current breaker settings to them. Every
state change is logged and exported (`agent_proxy_circuit_state`, `..._transitions`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from yarl import URL

from proxy.forward.balancer import Endpoint
from proxy.forward.breaker import BreakerSettings, CircuitBreaker, State
from proxy.logs import log_event

if TYPE_CHECKING:
    from proxy.metrics import Metrics

log = logging.getLogger("agent_proxy.resilience")


def safe_label(url: str) -> str:
    """The URL without user info, for labels and logs."""
    try:
        return str(URL(url).with_user(None))
    except ValueError:
        return "invalid-url"


class EndpointRegistry:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._endpoints: dict[tuple[str, str], Endpoint] = {}

    def endpoint(
        self, upstream: str, url: str, settings: BreakerSettings, metrics: Metrics | None, label: str | None = None
    ) -> Endpoint:
        """The endpoint for (upstream, url), created on first use; the given breaker settings apply from now on.

        `label` names it in metrics and status (default: the URL without user info).
        """
        key = (upstream, url)
        found = self._endpoints.get(key)
        if found is not None:
            found.breaker.configure(settings)
            return found
        label = safe_label(label or url)
        breaker = CircuitBreaker(settings, self._clock, _listener(upstream, label, metrics))
        endpoint = self._endpoints[key] = Endpoint(upstream, url, label, breaker)
        if metrics is not None:
            metrics.circuit_state.labels(upstream, label).set(State.CLOSED)
        return endpoint

    def status(self) -> list[dict[str, Any]]:
        """Every breaker, for /admin/status."""
        rows = []
        for endpoint in list(self._endpoints.values()):  # a reload compiling in a thread may add one meanwhile
            breaker = endpoint.breaker
            settings = breaker.settings
            rows.append(
                {
                    "upstream": endpoint.upstream,
                    "endpoint": endpoint.label,
                    "state": breaker.state.label if settings.enabled else "disabled",
                    "consecutive_failures": breaker.consecutive_failures,
                    "retry_in_s": round(breaker.retry_after_s(), 3),
                    "probes_in_flight": breaker.probes_in_flight,
                    "in_flight": endpoint.in_flight,
                    "failure_threshold": settings.failure_threshold,
                    "recovery_timeout_s": settings.recovery_timeout_s,
                    "half_open_max_calls": settings.half_open_max_calls,
                }
            )
        return rows


def _listener(upstream: str, label: str, metrics: Metrics | None) -> Callable[[State, State], None]:
    def changed(old: State, new: State) -> None:
        if metrics is not None:
            metrics.circuit_state.labels(upstream, label).set(new)
            metrics.circuit_transitions.labels(upstream, label, new.label).inc()
        level = logging.WARNING if new is State.OPEN else logging.INFO
        moved = {"from": old.label, "to": new.label}
        log_event(log, "circuit breaker changed state", level, upstream=upstream, endpoint=label, **moved)

    return changed

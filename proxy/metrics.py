"""Every Prometheus collector of the proxy: the core's declared here, each stage's in its `StageSpec`.

With several workers (`serve --workers N`) every gauge says how workers' values combine
(`multiprocess_mode`; ignored in a single process): counts add up, states take the worst.

Label values come only from names the policy defines (routes, upstreams, stages,
decision codes) or small fixed sets (status classes), never from raw request input,
so cardinality stays bounded whatever callers send.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from time import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.policy.stage_order import STAGE_ORDER
from proxy.policy.stage_spec import MetricSpec

# Set by `serve --workers N` before any worker imports prometheus_client: every worker then writes its
# series to files there, and /metrics (from any worker) renders the sum over all of them (docs/workers.md).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}  # bounded: labels are policy names
        r = self.registry
        self.requests = Counter(
            "agent_proxy_requests",
            "Requests handled, by route, upstream and status class.",
            ["route", "upstream", "status_class"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "agent_proxy_request_duration_seconds",
            "Time from request start to the last byte sent.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb_seconds = Histogram(
            "agent_proxy_time_to_first_byte_seconds",
            "Time from request start to the first body byte sent.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "agent_proxy_upstream_response_seconds",
            "Time until an upstream's response head arrived.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "agent_proxy_requests_in_flight", "Requests being handled now.", registry=r, multiprocess_mode="livesum"
        )
        self.worker_started = Gauge(
            "agent_proxy_worker_started_timestamp_seconds",
            "When the serving process started (with workers: one series per live worker, labelled by pid).",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.errors = Counter(
            "agent_proxy_errors", "Errors the proxy produced, by kind and source.", ["kind", "source"], registry=r
        )
        self.stage_decisions = Counter(
            "agent_proxy_stage_decisions",
            "What stages decided; mode=shadow means it was only recorded.",
            ["stage", "decision", "mode"],
            registry=r,
        )
        self.policy_reloads = Counter(
            "agent_proxy_policy_reloads", "Policy reload attempts by result.", ["result"], registry=r
        )
        self.policy_loaded = Gauge(
            "agent_proxy_policy_loaded_timestamp_seconds",
            "When the serving policy was loaded (with workers: the oldest a live worker serves).",
            registry=r,
            multiprocess_mode="livemin",
        )

        # ---- the spend ledger (proxy/accounting/ledger.py)
        self.ledger_records = Counter(
            "agent_proxy_ledger_records",
            "Ledger records by result (written, dropped, refused).",
            ["result"],
            registry=r,
        )
        self.ledger_errors = Counter(
            "agent_proxy_ledger_errors", "Ledger storage errors by operation (open, write, writer).", ["op"], registry=r
        )

        # ---- resilient forwarding (proxy/forward/, proxy/forward/attempts.py)
        # endpoint = an upstream URL from the policy, without user info; reason and kind are small fixed sets.
        self.circuit_state = Gauge(
            "agent_proxy_circuit_state",
            "Circuit breaker state per upstream endpoint: 0 closed, 1 half-open, 2 open.",
            ["upstream", "endpoint"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.circuit_transitions = Counter(
            "agent_proxy_circuit_transitions",
            "Circuit breaker state changes, by the state entered.",
            ["upstream", "endpoint", "to"],
            registry=r,
        )
        self.upstream_retries = Counter(
            "agent_proxy_upstream_retries",
            "Attempts repeated on one upstream, by what failed (status code, connect_error, timeout, broken_body).",
            ["upstream", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "agent_proxy_fallbacks", "Requests sent on to a fallback upstream.", ["route", "upstream"], registry=r
        )
        self.degraded_replies = Counter(
            "agent_proxy_degraded_replies",
            "Fixed assistant replies given because every upstream failed, by kind.",
            ["route", "kind"],
            registry=r,
        )

        # ---- the caller's side (proxy/edge.py): reason and state are the fixed sets of that module.
        self.caller_connections = Gauge(
            "agent_proxy_caller_connections",
            "Open caller connections, by state (authenticated: a request on it was identified).",
            ["state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.host_refusals = Counter(
            "agent_proxy_host_refusals",
            "Requests refused with 403 for their Host or Origin header (DNS rebinding, cross-site), by route.",
            ["route", "header"],
            registry=r,
        )
        self.session_order_waits = Counter(
            "agent_proxy_mcp_session_order_waits",
            "MCP requests held until their session's GET stream, opened before them, was open upstream, by route "
            "and result (waited, timed_out, no_stream: none was opened within the grace).",
            ["route", "result"],
            registry=r,
        )
        self.caller_connections_closed = Counter(
            "agent_proxy_caller_connections_closed",
            "Caller connections the proxy closed, by reason (connection_cap, unauthenticated_cap, head_timeout, "
            "body_timeout, malformed).",
            ["reason"],
            registry=r,
        )

        # ---- the shared-state backend (proxy/state/): backend = memory | redis.
        self.state_backend_errors = Counter(
            "agent_proxy_state_backend_errors",
            "Calls to the shared-state backend that failed or timed out, by operation (acquire, adjust).",
            ["backend", "op"],
            registry=r,
        )
        self.state_backend_up = Gauge(
            "agent_proxy_state_backend_up",
            "1 when the last state backend call succeeded (with workers: 0 if it failed in any).",
            ["backend"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.state_settlements_pending = Gauge(
            "agent_proxy_state_settlements_pending",
            "Slot releases and corrections waiting for the backend to answer again (retried until it does).",
            ["backend"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.state_settlements_deferred = Counter(
            "agent_proxy_state_settlements_deferred",
            "Settlements that met a backend error and were kept for retry.",
            ["backend"],
            registry=r,
        )
        self.state_settlements_dropped = Counter(
            "agent_proxy_state_settlements_dropped",
            "Kept settlements dropped because more than state.max_pending_settlements were waiting.",
            ["backend"],
            registry=r,
        )
        self.state_leases_lapsed = Counter(
            "agent_proxy_state_leases_lapsed",
            "Slots whose lease lapsed while their response lived (renewals failed for longer than state.lease_s).",
            ["backend"],
            registry=r,
        )
        # ---- each stage's own (proxy/policy/stage_order.py)
        for spec in STAGE_ORDER:
            for metric in spec.metrics:
                setattr(self, metric.attr, _collector(metric, r))

    def __getattr__(self, name: str) -> Any:
        """Only reached for a name nothing declared: the stages' collectors are set as attributes above."""
        raise AttributeError(f"no metric {name!r} is declared (proxy/metrics.py or a stage's StageSpec)")

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once: prometheus' own lookup validates and locks on every call."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def render(self) -> tuple[bytes, str]:
        """This process's registry; with workers, every live and past worker's series, combined."""
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        combined = CollectorRegistry()
        MultiProcessCollector(combined, directory)
        return generate_latest(combined), CONTENT_TYPE_LATEST


# A labelled child's value, added to or set directly (prometheus-client's private `_value`, with a fallback to the
# public method): what `Counter.inc` and `Gauge.set` add before it is a check that the child is observable, which a
# labelled child always is, a counter's check that the amount is not negative (callers add counts and prices, never
# below 0), and a gauge's time for its `mostrecent` multiprocess modes, which `setter` passes too. About a fifth of
# the public call's cost, on every request.


def adder(child: Any) -> Callable[[float], None]:
    value = getattr(child, "_value", None)
    return child.inc if value is None else value.inc  # type: ignore[no-any-return]


def setter(child: Any) -> Callable[[float], None]:
    value = getattr(child, "_value", None)
    if value is None:
        return child.set  # type: ignore[no-any-return]
    if getattr(child, "_is_most_recent", False):
        return lambda amount: value.set(float(amount), time())
    return lambda amount: value.set(float(amount))


def _collector(spec: MetricSpec, registry: CollectorRegistry) -> MetricWrapperBase:
    if spec.kind == "counter":
        return Counter(spec.name, spec.doc, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.doc, spec.labels, registry=registry, multiprocess_mode=spec.multiprocess_mode)
    return Histogram(spec.name, spec.doc, spec.labels, buckets=spec.buckets or LATENCY_BUCKETS, registry=registry)


def status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status else "none"

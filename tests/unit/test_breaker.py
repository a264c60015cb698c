"""The circuit breaker's state machine and the endpoint balancer, on an injected clock: no sleeps."""

from __future__ import annotations

import pytest

from proxy.forward.balancer import Balancer, Endpoint
from proxy.forward.breaker import BreakerSettings, CircuitBreaker, State
from proxy.forward.registry import EndpointRegistry, safe_label
from proxy.metrics import Metrics
from proxy.policy.compile import compile_policy
from proxy.policy.load import policy_from_text
from proxy.services import Services


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 3, recovery: float = 10.0, probes: int = 1, enabled: bool = True):
    clock = Clock()
    changes: list[tuple[State, State]] = []
    settings = BreakerSettings(enabled, threshold, recovery, probes)
    breaker = CircuitBreaker(settings, clock, lambda old, new: changes.append((old, new)))
    return breaker, clock, changes


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = breaker.allow()
        assert permit is not None
        breaker.record(permit, ok=False)


def test_opens_after_threshold_consecutive_failures_only():
    breaker, _, changes = make(threshold=3)
    fail(breaker, 2)
    breaker.record(breaker.allow(), ok=True)  # a success resets the streak
    fail(breaker, 2)
    assert breaker.state is State.CLOSED and breaker.consecutive_failures == 2
    fail(breaker)
    assert breaker.state is State.OPEN
    assert changes == [(State.CLOSED, State.OPEN)]
    assert breaker.allow() is None and not breaker.available()


def test_open_refuses_until_recovery_then_one_probe_closes_it():
    breaker, clock, changes = make(threshold=1, recovery=10.0)
    fail(breaker)
    clock.now += 9.99
    assert breaker.allow() is None
    assert breaker.retry_after_s() == pytest.approx(0.01)
    clock.now += 0.01
    assert breaker.state is State.HALF_OPEN and breaker.retry_after_s() == 0
    probe = breaker.allow()
    assert probe is not None and probe.probe
    assert breaker.allow() is None  # the only probe slot is taken
    breaker.record(probe, ok=True)
    assert breaker.state is State.CLOSED
    assert changes == [(State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.CLOSED)]
    assert breaker.allow() is not None


def test_a_failed_probe_reopens_for_a_full_recovery_period():
    breaker, clock, _ = make(threshold=1, recovery=5.0)
    fail(breaker)
    clock.now += 5
    probe = breaker.allow()
    breaker.record(probe, ok=False)
    assert breaker.state is State.OPEN
    clock.now += 4.9
    assert breaker.allow() is None
    clock.now += 0.1
    assert breaker.allow() is not None


def test_half_open_lets_at_most_max_calls_probes_at_once():
    breaker, clock, _ = make(threshold=1, recovery=1.0, probes=3)
    fail(breaker)
    clock.now += 1
    permits = [breaker.allow() for _ in range(10)]
    granted = [p for p in permits if p is not None]
    assert len(granted) == 3 and breaker.probes_in_flight == 3
    breaker.release(granted[0])  # a caller went away: the slot comes back, no verdict
    assert breaker.state is State.HALF_OPEN and breaker.allow() is not None
    assert breaker.allow() is None


def test_stale_verdicts_from_before_a_transition_are_ignored():
    breaker, clock, _ = make(threshold=2, recovery=1.0)
    slow = breaker.allow()  # started while closed, answers after the breaker opened
    fail(breaker, 2)
    breaker.record(slow, ok=True)
    assert breaker.state is State.OPEN
    clock.now += 1
    probe = breaker.allow()
    breaker.record(probe, ok=True)
    late = breaker.allow()
    fail(breaker)
    breaker.record(late, ok=True)  # same generation: resets the streak
    assert breaker.consecutive_failures == 0


def test_probes_still_running_from_an_earlier_period_keep_their_slots():
    breaker, clock, _ = make(threshold=1, recovery=1.0, probes=2)
    fail(breaker)
    clock.now += 1
    first, second = breaker.allow(), breaker.allow()
    breaker.record(first, ok=False)  # re-opens while `second` is still running
    clock.now += 1
    assert breaker.state is State.HALF_OPEN
    assert breaker.allow() is not None and breaker.allow() is None  # `second` still holds one slot
    breaker.record(second, ok=True)  # stale: no effect on the state, but its slot is free again
    assert breaker.state is State.HALF_OPEN and breaker.allow() is not None


def test_disabled_breaker_always_allows_and_disabling_closes_it():
    breaker, _, _ = make(threshold=1)
    fail(breaker)
    assert breaker.state is State.OPEN
    breaker.configure(BreakerSettings(enabled=False))
    assert breaker.state is State.CLOSED
    fail(breaker, 50)
    assert breaker.state is State.CLOSED and breaker.available()


def endpoint(url: str, breaker: CircuitBreaker | None = None) -> Endpoint:
    return Endpoint("up", url, url, breaker or CircuitBreaker(BreakerSettings(failure_threshold=1)))


def test_balancer_prefers_least_in_flight_and_rotates_ties():
    a, b, c = endpoint("a"), endpoint("b"), endpoint("c")
    balancer = Balancer((a, b, c))
    picked = [balancer.pick() for _ in range(3)]
    assert [lease.url for lease in picked] == ["a", "b", "c"]
    picked[1].finish(True)  # b is idle again, a and c are busy
    assert balancer.pick().url == "b"
    for lease in picked:
        lease.finish(True)
    assert (a.in_flight, b.in_flight, c.in_flight) == (0, 1, 0)
    rotation = []
    for _ in range(4):
        lease = balancer.pick()
        rotation.append(lease.url)
        lease.finish(True)
    assert set(rotation) == {"a", "c"}  # b is still busy


def test_balancer_skips_open_breakers_and_reports_when_none_is_left():
    clock = Clock()
    breakers = [CircuitBreaker(BreakerSettings(failure_threshold=1, recovery_timeout_s=3), clock) for _ in range(2)]
    a, b = endpoint("a", breakers[0]), endpoint("b", breakers[1])
    balancer = Balancer((a, b))
    balancer.pick().finish(False)  # a opens
    assert all(balancer.pick().url == "b" for _ in range(3)) and b.in_flight == 3
    a_state = a.breaker.state
    assert a_state is State.OPEN
    lease = balancer.pick()
    lease.finish(False)
    assert lease.url == "b" and balancer.pick() is None and not balancer.available()
    clock.now += 1
    assert balancer.retry_after_s() == pytest.approx(2)


def test_lease_finish_is_idempotent():
    a = endpoint("a")
    lease = Balancer((a,)).pick()
    lease.finish(False)
    lease.finish(False)
    assert a.in_flight == 0 and a.breaker.state is State.OPEN and a.breaker.consecutive_failures == 0


def test_registry_exports_state_and_transitions():
    metrics = Metrics()
    clock = Clock()
    registry = EndpointRegistry(clock)
    ep = registry.endpoint("up", "http://user:pw@host:1/v1", BreakerSettings(failure_threshold=1), metrics)
    labels = {"upstream": "up", "endpoint": "http://host:1/v1"}
    assert ep.label == labels["endpoint"]
    assert metrics.registry.get_sample_value("agent_proxy_circuit_state", labels) == 0
    lease = Balancer((ep,)).pick()
    lease.finish(False)
    assert metrics.registry.get_sample_value("agent_proxy_circuit_state", labels) == 2
    opened = metrics.registry.get_sample_value("agent_proxy_circuit_transitions_total", {**labels, "to": "open"})
    assert opened == 1
    [row] = registry.status()
    assert row["state"] == "open" and row["endpoint"] == "http://host:1/v1" and "pw" not in str(row)
    assert safe_label("not a url") == "invalid-url"


POLICY = """
version: 1
upstreams:
  a:
    endpoints: [http://a1.local, http://a2.local]
    circuit_breaker: {{failure_threshold: {threshold}}}
routes:
  - {{prefix: /, upstream: a}}
"""


def test_breakers_survive_a_recompile_and_take_the_new_settings():
    services = Services()
    first = compile_policy(policy_from_text(POLICY.format(threshold=5), env={}), services=services)
    breaker = first.upstreams["a"].balancer.endpoints[0].breaker
    fail(breaker, 3)
    second = compile_policy(policy_from_text(POLICY.format(threshold=2), env={}), services=services)
    assert second.upstreams["a"].balancer.endpoints[0].breaker is breaker
    assert breaker.settings.failure_threshold == 2 and breaker.consecutive_failures == 3
    assert [row["endpoint"] for row in services.endpoints.status()] == ["http://a1.local", "http://a2.local"]

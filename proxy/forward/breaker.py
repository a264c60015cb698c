"""A circuit breaker for one upstream endpoint: closed, open, half-open.

It opens after `failure_threshold` consecutive failures (not a failure rate over a
window: a sidecar sees too few requests per endpoint for a rate to mean much, and a
streak is what an outage looks like; Envoy's `consecutive_5xx` makes the same choice).
Open, it refuses calls for `recovery_timeout_s`; then it is half-open and lets at most
`half_open_max_calls` probes run at once. A successful probe closes it, a failed one
opens it again for another `recovery_timeout_s`.

Time only moves on when the breaker is asked (`allow`, `state`): no timers, so the
clock can be injected and a test never sleeps. Every call is a `Permit` stamped with
the breaker's generation; a verdict from a call that began before the last transition
is ignored, so a slow request from before an outage cannot close a breaker it did not probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum


class State(IntEnum):
    """Values as exported by the `agent_proxy_circuit_state` gauge: higher is worse."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    enabled: bool = True
    failure_threshold: int = 5
    recovery_timeout_s: float = 30.0
    half_open_max_calls: int = 1


@dataclass(frozen=True, slots=True)
class Permit:
    """One call let through; `probe` calls hold one of the half-open slots until their verdict."""

    generation: int
    probe: bool


Listener = Callable[[State, State], None]
_FREE = Permit(generation=-1, probe=False)  # breaker disabled: verdicts change nothing


class CircuitBreaker:
    __slots__ = (
        "_clock",
        "_failures",
        "_generation",
        "_on_change",
        "_opened_at",
        "_permit",
        "_probes",
        "_state",
        "settings",
    )

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Listener | None = None,
    ):
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self._on_change = on_change
        self._state = State.CLOSED
        self._generation = 0
        self._permit = Permit(0, probe=False)  # shared by every call of a closed period: no allocation per call
        self._failures = 0
        self._probes = 0
        self._opened_at = 0.0

    @property
    def state(self) -> State:
        """The current state, moving from open to half-open once the recovery time has passed."""
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.settings.recovery_timeout_s:
            self._move(State.HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def probes_in_flight(self) -> int:
        return self._probes

    def available(self) -> bool:
        """Whether `allow()` would grant a call now (it does not take one)."""
        if not self.settings.enabled:
            return True
        state = self.state
        return state is State.CLOSED or (state is State.HALF_OPEN and self._probes < self.settings.half_open_max_calls)

    def allow(self) -> Permit | None:
        """A permit for one call, or None while open (or while half-open with every probe slot taken)."""
        if not self.settings.enabled:
            return _FREE
        state = self.state
        if state is State.CLOSED:
            return self._permit
        if state is State.HALF_OPEN and self._probes < self.settings.half_open_max_calls:
            self._probes += 1
            return Permit(self._generation, probe=True)
        return None

    def record(self, permit: Permit, ok: bool) -> None:
        """The verdict on a call: a success, or a failure (connection error, timeout, failure status)."""
        if permit.probe:
            self._probes -= 1
        if permit.generation != self._generation or not self.settings.enabled:
            return
        if ok:
            if self._state is State.HALF_OPEN:
                self._move(State.CLOSED)
            self._failures = 0
            return
        if self._state is State.HALF_OPEN:
            self._move(State.OPEN)
            return
        self._failures += 1
        if self._state is State.CLOSED and self._failures >= self.settings.failure_threshold:
            self._move(State.OPEN)

    def release(self, permit: Permit) -> None:
        """A call that ended with no verdict (the caller went away): only its probe slot is given back."""
        if permit.probe:
            self._probes -= 1

    def configure(self, settings: BreakerSettings) -> None:
        """New settings from a reloaded policy; turning the breaker off closes it."""
        self.settings = settings
        if not settings.enabled and self._state is not State.CLOSED:
            self._move(State.CLOSED)

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a probe through; 0 when it would allow one now."""
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.settings.recovery_timeout_s - self._clock())

    def _move(self, new: State) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._permit = Permit(self._generation, probe=False)
        self._failures = 0
        if new is State.OPEN:
            self._opened_at = self._clock()
        # Probes still running keep their slots until their (ignored) verdict: "at most N probes at once"
        # holds for what actually reaches the upstream, across transitions too.
        if self._on_change is not None:
            self._on_change(old, new)

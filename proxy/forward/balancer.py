"""Choosing an endpoint of an upstream: least requests in flight, skipping open breakers.

An `Endpoint` is process-wide (its breaker and in-flight count outlive policy reloads);
a `Balancer` is compiled per policy over the endpoints of one upstream. Equal loads are
broken by a rotating start, so a lightly loaded upstream is still spread round-robin.
A `Lease` is one call on one endpoint: it holds the in-flight slot and the breaker permit
until its verdict, given once, when the response is over.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.forward.breaker import CircuitBreaker, Permit


@dataclass(eq=False, slots=True)
class Endpoint:
    upstream: str
    url: str
    label: str  # `url` without user info: safe for metrics, logs and /admin/status
    breaker: CircuitBreaker
    in_flight: int = 0


class Lease:
    __slots__ = ("_done", "endpoint", "permit")

    def __init__(self, endpoint: Endpoint, permit: Permit):
        self.endpoint = endpoint
        self.permit = permit
        self._done = False
        endpoint.in_flight += 1

    @property
    def url(self) -> str:
        return self.endpoint.url

    def finish(self, ok: bool | None) -> None:
        """The breaker's verdict (None: no verdict, e.g. the caller went away); idempotent."""
        if self._done:
            return
        self._done = True
        self.endpoint.in_flight -= 1
        if ok is None:
            self.endpoint.breaker.release(self.permit)
        else:
            self.endpoint.breaker.record(self.permit, ok)


class Balancer:
    __slots__ = ("_turn", "endpoints")

    def __init__(self, endpoints: tuple[Endpoint, ...]):
        if not endpoints:
            raise ValueError("an upstream needs at least one endpoint")
        self.endpoints = endpoints
        self._turn = 0

    def pick(self) -> Lease | None:
        """A lease on the least busy endpoint whose breaker lets a call through, or None if none does."""
        endpoints = self.endpoints
        count = len(endpoints)
        if count == 1:
            permit = endpoints[0].breaker.allow()
            return None if permit is None else Lease(endpoints[0], permit)
        start = self._turn
        self._turn = (start + 1) % count
        best: Endpoint | None = None
        for offset in range(count):
            endpoint = endpoints[(start + offset) % count]
            if (best is None or endpoint.in_flight < best.in_flight) and endpoint.breaker.available():
                best = endpoint
        if best is None:
            return None
        permit = best.breaker.allow()  # granted: `available()` just said so and nothing ran in between
        return None if permit is None else Lease(best, permit)

    def available(self) -> bool:
        return any(endpoint.breaker.available() for endpoint in self.endpoints)

    def retry_after_s(self) -> float:
        """Seconds until some endpoint will take a call again."""
        return min(endpoint.breaker.retry_after_s() for endpoint in self.endpoints)

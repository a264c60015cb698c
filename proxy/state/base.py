"""The shared-state interface: a few atomic counter operations, two backends.

Limits (rate, concurrency, spend) are built on three kinds of counter, and a whole
admission is one call: every check is evaluated, and only if all pass are all of them
applied, so a refusal never charges anything. Each backend makes that call atomic its
own way (memory: no await inside it; Redis: one Lua script, one round trip), with the
same arithmetic (`proxy/state/arith.py`, mirrored in `proxy/state/lua.py`).

Time is passed in (`now`, epoch seconds) rather than read by the store, so the
arithmetic is tested with an injected clock and replicas share one notion of time
(their clocks must be NTP-synchronised; a skew of d seconds lets d x rate extra through).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


class BackendUnavailable(Exception):
    """The store could not be reached in time; the policy decides whether to admit."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A smooth rate (GCRA): `limit` units per `period_s`, up to `limit` at once, refilling continuously."""

    key: str
    limit: int
    period_s: float
    cost: float = 1.0


@dataclass(frozen=True, slots=True)
class Slot:
    """One of `limit` concurrent slots, held under `lease` until released or until `ttl_s` passes."""

    key: str
    limit: int
    lease: str
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Quota:
    """A running total for a period that ends at `expires_at` (a day's spend, a run's tokens).

    `strict`: admitted only if the total stays within `limit` after `cost`; otherwise
    admitted while the total is still below `limit` (the cost is an estimate).
    """

    key: str
    limit: float
    cost: float
    expires_at: float
    strict: bool = False


Check = Rate | Slot | Quota


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check's answer: `remaining` units after this request, `reset_s` until full again
    (or until the period ends), `retry_after_s` until it would pass (0 when it did)."""

    allowed: bool
    remaining: float
    reset_s: float
    retry_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RateDelta:
    """Charge (positive) or refund (negative) a rate after the fact: reconciliation, never refused."""

    key: str
    limit: int
    period_s: float
    delta: float


@dataclass(frozen=True, slots=True)
class Release:
    key: str
    lease: str


@dataclass(frozen=True, slots=True)
class QuotaDelta:
    key: str
    delta: float
    expires_at: float


Change = RateDelta | Release | QuotaDelta


class Store(ABC):
    backend: ClassVar[str]
    opened_from: dict[str, object] | None = None  # the `state:` settings it was opened with

    @abstractmethod
    async def acquire(self, checks: Sequence[Check], now: float) -> list[Verdict]:
        """All checks or none: every verdict allowed means every check was applied."""

    @abstractmethod
    async def adjust(self, changes: Sequence[Change], now: float) -> list[float]:
        """Apply changes unconditionally; per change: a quota's new total, a rate's remaining, 0 for a release."""

    @abstractmethod
    async def ping(self) -> bool:
        """Reachable now (for /readyz); never raises."""

    async def close(self) -> None:  # noqa: B027 - optional: only Redis holds connections
        """Release connections; the memory store has none."""


def admitted(verdicts: Sequence[Verdict]) -> bool:
    return all(v.allowed for v in verdicts)

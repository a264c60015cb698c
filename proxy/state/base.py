"""The shared-state interface: a few atomic counter operations, two backends.

Limits (rate, concurrency, spend) are built on three kinds of counter, and a whole
admission is one call: every check is evaluated, and only if all pass are all of them
applied, so a refusal never charges anything. Each backend makes that call atomic its
own way (memory: no await inside it; Redis: one Lua script, one round trip), with the
same arithmetic (`proxy/state/arith.py`, mirrored in `proxy/state/lua.py`).

Time is passed in (`now`, epoch seconds) rather than read by the store, so the
arithmetic is tested with an injected clock and replicas share one notion of time
(their clocks must be NTP-synchronised; a skew of d seconds lets d x rate extra through).

The checks, verdicts and changes are plain slotted dataclasses, never changed once built
(not `frozen`: several are built per request, and a frozen one costs about three times as
much to construct).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


class BackendUnavailable(Exception):
    """The store could not be reached in time; the policy decides whether to admit.

    `maybe_applied`: the call may have reached the store (and be applied there after the
    caller gave up on its answer), as opposed to failing before anything was sent."""

    def __init__(self, message: str, maybe_applied: bool = True):
        super().__init__(message)
        self.maybe_applied = maybe_applied


@dataclass(slots=True)
class Rate:
    """A smooth rate (GCRA): `limit` units per `period_s`, up to `limit` at once, refilling continuously."""

    key: str
    limit: int
    period_s: float
    cost: float = 1.0


@dataclass(slots=True)
class Slot:
    """One of `limit` concurrent slots, held under `lease` until released or until `ttl_s` passes."""

    key: str
    limit: int
    lease: str
    ttl_s: float


@dataclass(slots=True)
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


@dataclass(slots=True)
class Verdict:
    """One check's answer: `remaining` units after this request, `reset_s` until full again
    (or until the period ends), `retry_after_s` until it would pass (0 when it did)."""

    allowed: bool
    remaining: float
    reset_s: float
    retry_after_s: float = 0.0


@dataclass(slots=True)
class RateDelta:
    """Charge (positive) or refund (negative) a rate after the fact: reconciliation, never refused."""

    key: str
    limit: int
    period_s: float
    delta: float


@dataclass(slots=True)
class Release:
    key: str
    lease: str


@dataclass(slots=True)
class QuotaDelta:
    key: str
    delta: float
    expires_at: float


@dataclass(slots=True)
class Renew:
    """Move a held slot's deadline to `ttl_s` from now; a lease that already lapsed is not taken back."""

    key: str
    lease: str
    ttl_s: float


@dataclass(slots=True)
class Once:
    """First in a call, the admission's marker: an admission is not applied once cancelled, a settlement
    at most once, so that a call retried after a lost reply is not applied twice (within `ttl_s`)."""

    key: str
    ttl_s: float


@dataclass(slots=True)
class Undo:
    """First in a call: the rest (the admission's charges, negated) applies only if the admission under
    this marker was applied; if it was not (yet), it never will be."""

    key: str
    ttl_s: float


Change = RateDelta | Release | QuotaDelta | Renew | Once | Undo


class Store(ABC):
    backend: ClassVar[str]
    opened_from: dict[str, object] | None = None  # the `state:` settings it was opened with
    # Slots are leased for this long and renewed while their response lives (None: held until released, the
    # memory store's way: a process that dies takes its slots with it).
    lease_s: float | None = None

    @abstractmethod
    async def acquire(self, checks: Sequence[Check], now: float, once_key: str | None = None) -> list[Verdict]:
        """All checks or none: every verdict allowed means every check was applied. With `once_key`, an
        admission that `cancel` reached first is never applied (stores whose calls can be lost)."""

    @abstractmethod
    async def adjust(self, changes: Sequence[Change], now: float) -> list[float]:
        """Apply changes unconditionally; per change: a quota's new total, a rate's remaining, 0 for a release."""

    async def settle(self, changes: Sequence[Change], now: float, once_key: str) -> list[float] | None:
        """`adjust` that is never lost: None when it could not be applied yet (then it is kept and retried,
        at most once per `once_key`). The memory store cannot fail, so it just applies the changes."""
        return await self.adjust(changes, now)

    def cancel(self, checks: Sequence[Check], once_key: str) -> None:  # noqa: B027 - only lossy stores
        """An admission failed without an answer and may still be applied: undo it if so (in the background)."""

    def hold(self, slot: Slot) -> None:  # noqa: B027 - only stores with leases renew them
        """Keep renewing the lease of an admitted slot until `let_go` (stores with `lease_s` only)."""

    def let_go(self, lease: str) -> None:  # noqa: B027 - as hold
        """Stop renewing a lease: its response is over and its release is on its way."""

    @abstractmethod
    async def ping(self) -> bool:
        """Reachable now (for /readyz); never raises."""

    async def close(self) -> None:  # noqa: B027 - optional: only Redis holds connections
        """Release connections; the memory store has none."""


def admitted(verdicts: Sequence[Verdict]) -> bool:
    return all(v.allowed for v in verdicts)

"""The shared-state interface: a few atomic counter operations, two backends.

Limits (rate, concurrency, spend) are built on three kinds of counter, and a whole
admission is one call: every check is evaluated, and only if all pass are all of them
applied, so a refusal never charges anything. Each backend makes that call atomic its
own way (memory: no await inside it; Redis: one Lua script, one round trip), with the
same arithmetic (`proxy/state/arith.py`, mirrored in `proxy/state/lua.py`).

Time is passed in (`now`, epoch seconds) rather than read by the store, so the
arithmetic is tested with an injected clock and replicas share one notion of time
(their clocks must be NTP-synchronised; a skew of d seconds lets d x rate extra through).

A call passes a `Plan` (the checks' rows, compiled once per caller and route) and the
request's amounts, and an admission answers in flat figures, so the usual request builds no
check or verdict objects. Those are plain slotted dataclasses, never changed once built (not
`frozen`: a frozen one costs about three times as much to construct), for the calls still
made of them (`acquire`, `adjust`, a lost call's undo, lease renewals, tests).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


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

# A plan's row kinds; a row is (kind, key, limit, window, strict): the window is a rate's `period_s`, a slot's
# `ttl_s` or a quota's `expires_at`.
RATE, SLOT, QUOTA = "r", "s", "q"
Row = tuple[str, str, Any, float, bool]  # the limit: an int for rates and slots, a float for quotas
FIGURES = 4  # per row of an admission's answer: allowed (1/0), remaining, reset_s, retry_after_s


class Plan:
    """An admission's checks, compiled once (per caller and route): the rows of what is checked, in order; a
    call passes only what varies per request, one amount per row (a rate's or quota's cost, a slot's lease).
    So a request's admission builds no check or verdict objects: the stores walk the rows, and answer in flat
    figures (`FIGURES` per row)."""

    __slots__ = ("admits", "marked", "rates", "rows", "settles", "wire")

    def __init__(self, rows: Sequence[Row]):
        self.rows = tuple(rows)
        # Rates and quotas need the admission's once-marker in stores whose calls can be lost.
        self.marked = any(row[0] != SLOT for row in self.rows)
        self.rates = tuple((index, row[2]) for index, row in enumerate(self.rows) if row[0] == RATE)
        self.wire: object = None  # a backend's own form of the rows, made by its first call with this plan
        # The memory store's admission and settlement of these rows, written out (proxy/state/memory_plans.py) by
        # its first call of each with this plan; False where it keeps its generic loop.
        self.admits: Any = None
        self.settles: Any = None

    @staticmethod
    def of(checks: Sequence[Check]) -> tuple[Plan, list[Any]]:
        """A plan made for one call, and its amounts."""
        rows: list[Row] = []
        amounts: list[Any] = []
        for check in checks:
            if isinstance(check, Rate):
                rows.append((RATE, check.key, check.limit, check.period_s, False))
                amounts.append(check.cost)
            elif isinstance(check, Slot):
                rows.append((SLOT, check.key, check.limit, check.ttl_s, False))
                amounts.append(check.lease)
            else:
                rows.append((QUOTA, check.key, check.limit, check.expires_at, check.strict))
                amounts.append(check.cost)
        return Plan(rows), amounts

    def changes(self, amounts: Sequence[Any]) -> list[Change]:
        """The rows as a settlement, with their amounts: a slot's release (of the lease), a rate's or a quota's
        correction (by the amount)."""
        changes: list[Change] = []
        for (kind, key, limit, window, _), amount in zip(self.rows, amounts, strict=True):
            if kind == SLOT:
                changes.append(Release(key, amount))
            elif kind == RATE:
                changes.append(RateDelta(key, limit, window, amount))
            else:
                changes.append(QuotaDelta(key, amount, window))
        return changes

    def checks(self, amounts: Sequence[Any]) -> list[Check]:
        """The rows with their amounts as check objects (for what is off the usual path: a lost call, leases)."""
        return [self.check(index, amounts[index]) for index in range(len(self.rows))]

    def check(self, index: int, amount: Any) -> Check:
        kind, key, limit, window, strict = self.rows[index]
        if kind == RATE:
            return Rate(key, limit, window, amount)
        if kind == SLOT:
            return Slot(key, limit, amount, window)
        return Quota(key, limit, amount, window, strict)


def verdicts(figures: Sequence[float]) -> list[Verdict]:
    """An admission's flat figures as one verdict per row."""
    return [
        Verdict(bool(figures[i]), figures[i + 1], figures[i + 2], figures[i + 3])
        for i in range(0, len(figures), FIGURES)
    ]


class Store(ABC):
    backend: ClassVar[str]
    opened_from: dict[str, object] | None = None  # the `state:` settings it was opened with
    # Slots are leased for this long and renewed while their response lives (None: held until released, the
    # memory store's way: a process that dies takes its slots with it).
    lease_s: float | None = None

    immediate: ClassVar[bool] = False  # answers `admit_now` at once, without a coroutine (nothing to wait for)

    def admit_now(self, plan: Plan, amounts: Sequence[Any], now: float) -> list[float]:
        """`admit`, for stores that are `immediate`."""
        raise NotImplementedError

    def adjust_now(self, changes: Sequence[Change], now: float) -> list[float]:
        """`adjust` (and `settle`, which cannot fail then), for stores that are `immediate`."""
        raise NotImplementedError

    def settle_now(self, plan: Plan, amounts: Sequence[Any], now: float) -> list[float]:
        """`adjust_now` of `plan.changes(amounts)`, without making them."""
        raise NotImplementedError

    @abstractmethod
    async def admit(self, plan: Plan, amounts: Sequence[Any], now: float, once_key: str | None = None) -> list[float]:
        """All rows or none: every row allowed means every row was applied; `FIGURES` figures per row. With
        `once_key`, an admission that `cancel` reached first is never applied (stores whose calls can be lost)."""

    async def acquire(self, checks: Sequence[Check], now: float, once_key: str | None = None) -> list[Verdict]:
        """`admit` of check objects: one verdict per check."""
        plan, amounts = Plan.of(checks)
        return verdicts(await self.admit(plan, amounts, now, once_key))

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

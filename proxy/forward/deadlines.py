"""Deadlines for waits on upstream answer heads, timed by one loop timer for the whole transport.

`asyncio.timeout_at` makes a loop timer on entry and cancels it on exit: with uvloop that is about
26,000 instructions per request, 2% of all the auth-only proxy spends on one, on the way to the
caller's first byte. Here a wait is an entry in a heap, by deadline; one timer fires at the
earliest deadline it was set for, cancels the waits that are due and moves on to the next one. A
wait that ends in time costs a heap push and a flag (its entry is dropped when it comes to the
top, or when finished entries outnumber the pending ones); a timer is made only when none is
pending, or when a wait is due before it (about once per `first_byte_s` under steady traffic). A
fire costs O(log n) per wait it expires or entry it drops, whatever the number of waits pending
(bench/deadlines.py).

uvloop runs a timer up to a millisecond early (its clock counts milliseconds), so a wait due
within `SLACK` of a fire is due then, as under a loop timer of its own; without that, a fire that
found nothing due would set the same timer again, and fire again, until the deadline passed.

A wait past its deadline ends as under `asyncio.timeout_at`: its task is cancelled, and the
cancellation becomes `TimeoutError` unless the task was also cancelled from outside.
"""

from __future__ import annotations

import asyncio
import heapq
from itertools import count
from types import TracebackType

SLACK = 0.001
"""Seconds: a wait due this soon is due now (uvloop fires timers up to a millisecond early)."""


class Deadlines:
    """The pending waits of one event loop, and the one timer that watches them."""

    __slots__ = ("_heap", "_order", "_pending", "_timer", "_timer_at")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Wait]] = []  # by deadline; finished waits stay until dropped
        self._order = count()  # ties in deadline: first come first
        self._pending = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def at(self, when: float) -> Wait:
        """`with deadlines.at(loop_time):` bounds the awaits inside, as `asyncio.timeout_at` would."""
        return Wait(self, when)

    @property
    def pending(self) -> int:
        """Waits entered and not left or expired."""
        return self._pending

    def _add(self, wait: Wait) -> None:
        heapq.heappush(self._heap, (wait.when, next(self._order), wait))
        self._pending += 1
        if self._timer is None or wait.when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._arm(wait.when)

    def _compact(self) -> None:
        """Drops the entries of waits that left in time: called once they outnumber the pending ones."""
        self._heap = [entry for entry in self._heap if entry[2].pending]
        heapq.heapify(self._heap)

    def _arm(self, when: float) -> None:
        self._timer_at = when
        self._timer = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        heap = self._heap
        due = asyncio.get_running_loop().time() + SLACK
        while heap and (heap[0][2].when <= due or not heap[0][2].pending):
            wait = heapq.heappop(heap)[2]
            if wait.pending:
                wait.pending = False
                self._pending -= 1
                wait.expire()
        if heap:
            self._arm(heap[0][0])


class Wait:
    """One bounded wait: a context manager, entered and left in the task that waits."""

    __slots__ = ("_cancelling", "_deadlines", "_task", "expired", "pending", "when")

    def __init__(self, deadlines: Deadlines, when: float) -> None:
        self._deadlines = deadlines
        self.when = when
        self.expired = False
        self.pending = False  # entered, and neither left nor expired

    def __enter__(self) -> Wait:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline bounds a wait inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.pending = True
        self._deadlines._add(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.pending:  # left in time: the entry stays in the heap, marked, until dropped
            self.pending = False
            deadlines = self._deadlines
            deadlines._pending -= 1
            if len(deadlines._heap) > 2 * deadlines._pending + 64:
                deadlines._compact()
        if self.expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def expire(self) -> None:
        self.expired = True
        self._task.cancel()

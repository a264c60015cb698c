"""The head-wait deadlines behave as asyncio.timeout_at does, with one timer for every wait."""

from __future__ import annotations

import asyncio
import random

import pytest
import uvloop

from proxy.forward.deadlines import Deadlines

LONG_S = 30.0  # never reached: a test that waits this long has failed


async def bounded(deadlines: Deadlines, within_s: float, work_s: float) -> str:
    loop = asyncio.get_running_loop()
    try:
        with deadlines.at(loop.time() + within_s):
            await asyncio.sleep(work_s)
    except TimeoutError:
        return "timed out"
    return "done"


async def test_a_wait_past_its_deadline_raises_timeout_error():
    started = asyncio.get_running_loop().time()
    assert await bounded(Deadlines(), 0.05, LONG_S) == "timed out"
    assert asyncio.get_running_loop().time() - started < 5


async def test_a_wait_that_ends_in_time_is_not_cancelled_later():
    deadlines = Deadlines()
    assert await bounded(deadlines, 0.05, 0) == "done"
    await asyncio.sleep(0.1)  # past the deadline the wait had: the task goes on undisturbed
    assert deadlines.pending == 0


async def test_an_earlier_deadline_added_later_is_kept():
    deadlines = Deadlines()
    late = asyncio.create_task(bounded(deadlines, LONG_S, 0.2))
    await asyncio.sleep(0)  # the late wait holds the timer first
    early = asyncio.create_task(bounded(deadlines, 0.05, LONG_S))
    assert await asyncio.wait_for(early, 5) == "timed out"
    assert await late == "done"


async def test_only_the_waits_that_are_due_time_out():
    deadlines = Deadlines()
    results = await asyncio.wait_for(
        asyncio.gather(
            bounded(deadlines, 0.05, LONG_S),
            bounded(deadlines, 0.1, LONG_S),
            bounded(deadlines, 2.0, 0.2),
            bounded(deadlines, 0.15, 0),
        ),
        10,
    )
    assert results == ["timed out", "timed out", "done", "done"]
    assert deadlines.pending == 0


async def test_a_cancellation_from_outside_stays_a_cancellation():
    deadlines = Deadlines()
    task = asyncio.create_task(bounded(deadlines, LONG_S, LONG_S))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines.pending == 0


async def test_a_deadline_already_past_times_out_at_once():
    loop = asyncio.get_running_loop()
    deadlines = Deadlines()
    with pytest.raises(TimeoutError), deadlines.at(loop.time() - 1):
        await asyncio.sleep(LONG_S)


async def test_waits_expire_in_the_order_of_their_deadlines_whatever_the_order_they_came_in():
    loop = asyncio.get_running_loop()
    deadlines, expired = Deadlines(), []
    offsets = [0.05 + 0.02 * i for i in range(12)]
    random.Random(7).shuffle(offsets)

    async def wait(offset: float) -> None:
        with pytest.raises(TimeoutError), deadlines.at(loop.time() + offset):
            await asyncio.sleep(LONG_S)
        expired.append(offset)

    await asyncio.wait_for(asyncio.gather(*(wait(offset) for offset in offsets)), 10)
    assert expired == sorted(offsets)
    assert deadlines.pending == 0 and deadlines._heap == []


async def test_waits_left_in_time_or_cancelled_never_expire_and_are_dropped():
    loop = asyncio.get_running_loop()
    deadlines = Deadlines()
    far = asyncio.create_task(bounded(deadlines, LONG_S, LONG_S))
    cancelled = [asyncio.create_task(bounded(deadlines, 0.05, LONG_S)) for _ in range(50)]
    due = asyncio.create_task(bounded(deadlines, 0.1, LONG_S))
    await asyncio.sleep(0)
    for task in cancelled:
        task.cancel()
    for _ in range(5000):  # waits that end in time, their entries marked in the heap
        with deadlines.at(loop.time() + 0.01):
            await asyncio.sleep(0)
    assert len(deadlines._heap) <= 2 * deadlines.pending + 64  # finished entries are dropped as they pile up
    assert await asyncio.wait_for(due, 5) == "timed out"
    assert all(task.cancelled() for task in cancelled)
    assert deadlines.pending == 1 and not far.done()
    far.cancel()
    await asyncio.gather(far, return_exceptions=True)
    assert deadlines.pending == 0


class CountedFires(Deadlines):
    __slots__ = ("fires",)

    def _fire(self) -> None:
        self.fires = getattr(self, "fires", 0) + 1
        super()._fire()


def test_under_uvloop_a_timer_that_fires_early_is_not_set_again_and_again():
    """uvloop runs a timer up to a millisecond before its time: the waits due then expire in that fire."""

    async def run() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        deadlines = CountedFires()
        count = 60
        start = loop.time() + 0.02
        results = await asyncio.gather(
            *(bounded_at(deadlines, start + i * 0.0003, LONG_S) for i in range(count)), return_exceptions=True
        )
        assert results == ["timed out"] * count
        return deadlines.fires, count

    fires, count = uvloop.run(run())
    assert fires <= count


async def bounded_at(deadlines: Deadlines, when: float, work_s: float) -> str:
    try:
        with deadlines.at(when):
            await asyncio.sleep(work_s)
    except TimeoutError:
        return "timed out"
    return "done"

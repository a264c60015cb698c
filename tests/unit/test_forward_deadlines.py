"""The head-wait deadlines behave as asyncio.timeout_at does, with one timer for every wait."""

from __future__ import annotations

import asyncio

import pytest

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
    assert deadlines._waits == set()


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
    assert deadlines._waits == set()


async def test_a_cancellation_from_outside_stays_a_cancellation():
    deadlines = Deadlines()
    task = asyncio.create_task(bounded(deadlines, LONG_S, LONG_S))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines._waits == set()


async def test_a_deadline_already_past_times_out_at_once():
    loop = asyncio.get_running_loop()
    deadlines = Deadlines()
    with pytest.raises(TimeoutError), deadlines.at(loop.time() - 1):
        await asyncio.sleep(LONG_S)

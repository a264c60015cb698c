"""Work started eagerly: done on the spot when it never waits, continued in a task from where it waited."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import pytest

from proxy.eager import start_eagerly


class Spawner:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))


async def test_work_that_never_waits_is_done_before_the_call_returns_and_makes_no_task():
    done: list[str] = []

    async def inner() -> str:
        return "settled"

    async def work() -> None:
        done.append(await inner())

    spawn = Spawner()
    start_eagerly(work(), spawn)
    assert done == ["settled"]
    assert spawn.tasks == []


async def test_work_that_waits_goes_on_in_a_task_with_what_it_waited_for():
    steps: list[object] = []
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def work() -> None:
        steps.append("started")
        steps.append(await gate)
        await asyncio.sleep(0)  # a bare yield, as asyncio.sleep(0) makes
        steps.append(await asyncio.to_thread(lambda: "from a thread"))

    spawn = Spawner()
    start_eagerly(work(), spawn)
    assert steps == ["started"] and len(spawn.tasks) == 1
    gate.set_result("opened")
    await spawn.tasks[0]
    assert steps == ["started", "opened", "from a thread"]


async def test_a_waiting_task_that_is_cancelled_is_cancelled_where_it_waits():
    seen: list[str] = []

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    spawn = Spawner()
    start_eagerly(work(), spawn)
    await asyncio.sleep(0)
    spawn.tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await spawn.tasks[0]
    assert seen == ["cancelled"]


async def test_a_failure_before_any_wait_is_logged_not_raised(caplog):
    async def work() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="agent_proxy.eager"):
        start_eagerly(work(), Spawner())
    assert any(record.exc_info and "boom" in str(record.exc_info[1]) for record in caplog.records)


async def test_a_failure_after_a_wait_is_the_tasks():
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def work() -> None:
        await gate
        raise RuntimeError("later")

    spawn = Spawner()
    start_eagerly(work(), spawn)
    gate.set_result(None)
    with pytest.raises(RuntimeError, match="later"):
        await spawn.tasks[0]

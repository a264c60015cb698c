"""What the transport's head-wait deadlines (proxy/forward/deadlines.py) cost, in-process, on uvloop.

Two cases, CPU time (robust on a shared machine), best of `--rounds`:
- per wait that ends in time (enter and leave a `with deadlines.at(...)` around an await), with
  `--in-flight` other waits pending: what every request pays;
- `--in-flight` waits that all time out, their deadlines `--spacing-ms` apart (an upstream that
  never answers a head while requests keep coming): the CPU of the timer's fires, per wait
  expired and per fire.
`--root DIR` imports the proxy from another checkout (e.g. `git archive` of an older commit) for a
before/after in the same run. Run:
    python bench/deadlines.py [--in-flight 1000 5000 20000] [--rounds 3] [--root DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import uvloop


async def _pending(deadlines: Any, count: int, when: float, spacing: float = 0.0) -> list[asyncio.Task[None]]:
    """`count` tasks each waiting under a deadline (`when`, then `spacing` apart), all entered."""
    entered = asyncio.Event()
    started = 0

    async def wait(at: float) -> None:
        nonlocal started
        with deadlines.at(at):
            started += 1
            if started == count:
                entered.set()
            await asyncio.Event().wait()

    tasks = [asyncio.create_task(wait(when + i * spacing)) for i in range(count)]
    await entered.wait()
    return tasks


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def per_wait(make: Any, in_flight: int, waits: int) -> float:
    """µs of CPU per wait entered and left in time, with `in_flight` others pending."""
    loop = asyncio.get_running_loop()
    deadlines = make()
    others = await _pending(deadlines, in_flight, loop.time() + 30)  # before the new ones, as in service
    started = time.process_time()
    for _ in range(waits):
        with deadlines.at(loop.time() + 60):
            await asyncio.sleep(0)
    spent = time.process_time() - started
    await _stop(others)
    return spent / waits * 1e6


async def all_expire(make: Any, count: int, spacing: float) -> tuple[float, int]:
    """CPU µs spent in fires, and the fires, when `count` waits time out `spacing` s apart."""
    loop = asyncio.get_running_loop()
    deadlines = make()
    fires, spent = 0, 0.0
    fire = deadlines._fire

    def timed() -> None:
        nonlocal fires, spent
        fires += 1
        started = time.process_time()
        fire()
        spent += time.process_time() - started

    deadlines._fire = timed
    tasks = await _pending(deadlines, count, loop.time() + 0.05, spacing)
    await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(task.exception(), TimeoutError) for task in tasks)
    return spent * 1e6, fires


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--waits", type=int, default=50000, help="waits that end in time, per round")
    parser.add_argument("--spacing-ms", type=float, default=0.2, help="between the deadlines that all expire")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    from proxy.forward.deadlines import Deadlines

    class Timed(Deadlines):  # an instance attribute for `_fire`, so the bench can time each fire
        __slots__ = ("__dict__",)

    print(f"proxy from {args.root}")
    print("| in flight | µs CPU per wait in time | all expire: fires | µs CPU per wait expired | µs CPU per fire |")
    print("|---|---|---|---|---|")
    for count in args.in_flight:
        rounds = range(args.rounds)
        wait = min(uvloop.run(per_wait(Timed, count, args.waits)) for _ in rounds)
        spent, fires = min(uvloop.run(all_expire(Timed, count, args.spacing_ms / 1000)) for _ in rounds)
        print(f"| {count} | {wait:.3f} | {fires} | {spent / count:.2f} | {spent / fires:.1f} |")


if __name__ == "__main__":
    main()

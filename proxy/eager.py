"""Start a coroutine at once, and give it a task only if it has to wait.

A request's completion (stage `on_complete`s, then the log line) rarely waits for anything
with the memory store: run to its end on the spot, it costs no task, no scheduling and no
done callback. One that does wait (Redis, a token count in a thread) goes on in a task from
where it stopped. (Python 3.12's eager task factory does this for every task; this proxy
runs on 3.11 too.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Generator
from typing import Any

log = logging.getLogger("agent_proxy.eager")


def start_eagerly(coro: Coroutine[Any, Any, None], spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    """Runs `coro` until it first waits; the rest, if any, goes to `spawn` (which makes it a task)."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return
    except Exception:  # as a task's exception would be: logged, never raised into the caller
        log.exception("background work failed")
        return
    spawn(_rest(_Suspended(coro, waiting)))


async def _rest(suspended: _Suspended) -> None:
    await suspended


class _Suspended:
    """A started coroutine, waiting on what it yielded: awaiting this hands that to the task and goes on."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any):
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # the task's cancellation: the coroutine sees it where it waits
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration:
                    return

"""What a policy reload keeps: objects a compiled policy builds that hold the process's memory of traffic.

A reload compiles every stage anew, but the exact cache's stores, the tool schemas sessions
listed, the tool names given metric labels and the semantic cache's index are memory of
traffic that must not be forgotten because the file changed. A builder asks for one here by
kind and by the settings that shape it (bounds, time to live, backend): the same settings find
the same object, in this policy and the next; changed settings start a fresh one (logged at
info, by kind only: settings can hold a connection URL). At most `limit` objects of a kind are
kept, the least recently asked-for going first, so what a policy stopped using is bounded:
each kept object has its own bounds, and at most `limit` of them outlive their policy.

Policies compile in a thread while requests run on the loop: every method takes the lock.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from proxy.logs import log_event

log = logging.getLogger("agent_proxy.policy")

T = TypeVar("T")
MAX_KEPT = 8  # objects kept per kind unless the kind says otherwise
FRESH = "settings differ from every kept one: starting a fresh one"


class KeptRegistry:
    def __init__(self) -> None:
        self._kinds: dict[str, OrderedDict[Hashable, Any]] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, settings: Hashable, make: Callable[[], T], limit: int = MAX_KEPT) -> T:
        """The object of `kind` made with `settings`, made now if none is kept (then the oldest past `limit` goes)."""
        with self._lock:
            kept = self._kinds.setdefault(kind, OrderedDict())
            found = kept.get(settings)
            if found is None:
                if kept:
                    log_event(log, FRESH, kind=kind, kept=len(kept))
                found = kept[settings] = make()
                while len(kept) > limit:
                    kept.popitem(last=False)
            kept.move_to_end(settings)
            return found  # type: ignore[no-any-return]

    def values(self, kind: str) -> list[Any]:
        with self._lock:
            return list(self._kinds.get(kind, {}).values())

    async def close(self) -> None:
        """At shutdown: close what holds a connection (an object with an async `close`), then forget all."""
        with self._lock:
            kept = [value for values in self._kinds.values() for value in values.values()]
            self._kinds.clear()
        for value in kept:
            close = getattr(value, "close", None)
            if close is not None and inspect.iscoroutinefunction(close):
                await close()

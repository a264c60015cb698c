"""The serving policy and its hot reload.

A reload reads, validates and compiles the whole new file first, in a thread (a
large policy takes milliseconds to seconds), then swaps one reference; an invalid
edit, or any failure while loading, is logged and counted, shown on /admin/status
with its time, and the previous policy keeps serving. The watcher survives
whatever a reload does and applies the next valid edit. Requests read
`holder.current` once when they start, so an in-flight request finishes on the
policy it started with. The file is polled by mtime, size and inode (as mitmproxy
does), and SIGHUP forces a reload; reloads run one at a time.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from proxy.logs import log_event
from proxy.pipeline import StageFactory
from proxy.policy.compile import CompiledPolicy, compile_policy, uses_builtin_mock
from proxy.policy.load import PolicyError, load_policy
from proxy.policy.schema import Policy
from proxy.services import Services

log = logging.getLogger("agent_proxy.policy")

MockStarter = Callable[[], Awaitable[str]]
T = TypeVar("T")


class PolicyHolder:
    def __init__(self, current: CompiledPolicy, path: Path | None, services: Services, start_mock: MockStarter):
        self.current = current
        self.path = path
        self._services = services
        self._metrics = services.metrics
        self._start_mock = start_mock
        self._seen = self._stat()
        self._lock = asyncio.Lock()
        self.last_error: str | None = None  # the last rejected reload's problems, until a reload succeeds
        self.last_error_at: float | None = None  # unix time of that rejection; kept after a success, for the record
        self._metrics.policy_loaded.set(current.loaded_at)

    @classmethod
    async def create(
        cls, policy: Policy, path: Path | None, services: Services, start_mock: MockStarter
    ) -> PolicyHolder:
        compiled = await compile_with_mock(policy, path, services, start_mock)
        await warm(compiled, services)
        return cls(compiled, path, services, start_mock)

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def reload(self, reason: str) -> bool:
        """Load, validate and compile in a thread, then swap; any failure keeps the serving policy."""
        if self.path is None:
            return False
        async with self._lock:
            return await self._reload(reason)

    async def _reload(self, reason: str) -> bool:
        self._seen = self._stat()
        try:
            policy = await asyncio.to_thread(without_gc, load_policy, self.path)
            compiled = await compile_with_mock(policy, self.path, self._services, self._start_mock)
            await warm(compiled, self._services)
        except PolicyError as exc:
            self._failed(exc.problems, "invalid", reason)
            return False
        except Exception as exc:  # a bug in loading or compiling: the same as an invalid file, plus its trace
            log.exception("policy reload failed", extra={"fields": {"source": str(self.path)}})
            self._failed([f"internal error while loading: {type(exc).__name__}"], "error", reason)
            return False
        replaced = [self.current]
        self.current = compiled
        await asyncio.to_thread(replaced.clear)  # freeing a large policy takes milliseconds too
        self.last_error = None
        self._metrics.policy_reloads.labels("ok").inc()
        self._metrics.policy_loaded.set(compiled.loaded_at)
        log_event(log, "policy reloaded", source=str(self.path), reason=reason, routes=len(compiled.routes))
        return True

    def _failed(self, problems: list[str], result: str, reason: str) -> None:
        self.last_error = "; ".join(problems)
        self.last_error_at = time.time()
        self._metrics.policy_reloads.labels(result).inc()
        log_event(
            log,
            "policy reload rejected; the previous policy keeps serving",
            logging.WARNING,
            source=str(self.path),
            reason=reason,
            problems=problems,
        )

    async def watch(self) -> None:
        """Poll the file; runs until cancelled, whatever a reload does."""
        while True:
            await asyncio.sleep(self.current.policy.server.reload_interval_s)
            try:
                if self._stat() != self._seen:
                    await self.reload("file changed")
            except Exception:  # reload() catches what it knows; this keeps the watch going through the rest
                log.exception("policy watch failed; watching on")


def without_gc(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking policy work (in a thread) with automatic garbage collection paused.

    Building a large policy allocates enough to set off a full collection, which holds the
    GIL, and so the event loop, for ~80 ms with a 10,000-key policy; paused, the loop waits
    at most a few GIL switch intervals. What the work leaves behind is collected later as usual.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return work(*args, **kwargs)
    finally:
        if paused:
            gc.enable()


async def warm(compiled: CompiledPolicy, services: Services) -> None:
    """What the first requests would otherwise wait for: JWKS fetched in the background, and each stage's
    own preparation (`StageFactory.warm`, e.g. the semantic cache's model). (Token
    counting's encodings are not loaded here: each loads on the first count that needs it, in a
    thread, see proxy/accounting/tokens.py; most upstreams report usage, and each holds 31-48 MB.)"""
    services.jwks.prefetch()
    for failed in await asyncio.gather(*(f.warm() for f in _factories(compiled)), return_exceptions=True):
        if isinstance(failed, Exception):  # the stage then prepares on first use, as without warming
            log.warning("a stage could not prepare: %s", type(failed).__name__)


def _factories(compiled: CompiledPolicy) -> list[StageFactory]:
    return list({id(f): f for route in compiled.routes for f in route.chain.factories}.values())


async def compile_with_mock(
    policy: Policy, path: Path | None, services: Services, start_mock: MockStarter
) -> CompiledPolicy:
    mock_url = await start_mock() if uses_builtin_mock(policy) else None
    try:  # in a thread: compiling a large policy (patterns, keys) takes milliseconds
        return await asyncio.to_thread(
            without_gc, compile_policy, policy, path or "<policy>", builtin_mock_url=mock_url, services=services
        )
    except ValueError as exc:
        raise PolicyError(str(path), [str(exc)]) from None

"""The serving policy and its hot reload.

A reload validates and compiles the whole new file first, then swaps one
reference; an invalid edit is logged and counted and the previous policy keeps
serving. Requests read `holder.current` once when they start, so an in-flight
request finishes on the policy it started with. The file is polled by mtime, size
and inode (as mitmproxy does), and SIGHUP forces a reload.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from proxy.logs import log_event
from proxy.policy.compile import CompiledPolicy, compile_policy, uses_builtin_mock
from proxy.policy.load import PolicyError, load_policy
from proxy.policy.schema import Policy
from proxy.services import Services

log = logging.getLogger("agent_proxy.policy")

MockStarter = Callable[[], Awaitable[str]]


class PolicyHolder:
    def __init__(self, current: CompiledPolicy, path: Path | None, services: Services, start_mock: MockStarter):
        self.current = current
        self.path = path
        self._services = services
        self._metrics = services.metrics
        self._start_mock = start_mock
        self._seen = self._stat()
        self.last_error: str | None = None
        self._metrics.policy_loaded.set(current.loaded_at)

    @classmethod
    async def create(
        cls, policy: Policy, path: Path | None, services: Services, start_mock: MockStarter
    ) -> PolicyHolder:
        return cls(await compile_with_mock(policy, path, services, start_mock), path, services, start_mock)

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def reload(self, reason: str) -> bool:
        if self.path is None:
            return False
        self._seen = self._stat()
        try:
            policy = load_policy(self.path)
            compiled = await compile_with_mock(policy, self.path, self._services, self._start_mock)
        except PolicyError as exc:
            self.last_error = "; ".join(exc.problems)
            self._metrics.policy_reloads.labels("invalid").inc()
            log_event(
                log,
                "policy reload rejected; the previous policy keeps serving",
                logging.WARNING,
                source=str(self.path),
                reason=reason,
                problems=exc.problems,
            )
            return False
        self.current = compiled
        self.last_error = None
        self._metrics.policy_reloads.labels("ok").inc()
        self._metrics.policy_loaded.set(compiled.loaded_at)
        log_event(log, "policy reloaded", source=str(self.path), reason=reason, routes=len(compiled.routes))
        return True

    async def watch(self) -> None:
        """Poll the file; runs until cancelled."""
        while True:
            await asyncio.sleep(self.current.policy.server.reload_interval_s)
            if self._stat() != self._seen:
                await self.reload("file changed")


async def compile_with_mock(
    policy: Policy, path: Path | None, services: Services, start_mock: MockStarter
) -> CompiledPolicy:
    mock_url = await start_mock() if uses_builtin_mock(policy) else None
    try:
        return compile_policy(policy, path or "<policy>", builtin_mock_url=mock_url, services=services)
    except ValueError as exc:
        raise PolicyError(str(path), [str(exc)]) from None

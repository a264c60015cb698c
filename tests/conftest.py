"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fixtures.fake_upstream import FakeUpstream
from tests.fixtures.proxy_server import ProxyServer
from tests.fixtures.redis_server import REDIS_SERVER, RedisServer
from tests.fixtures.redis_server import SKIP_REASON as REDIS_SKIP_REASON

# ---- fake upstream -------------------------------------------------------------------


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """A fresh mock LLM server on a real loopback port, stopped after the test."""
    with FakeUpstream() as fake:
        yield fake


# ---- end fake upstream ---------------------------------------------------------------

# ---- proxy ---------------------------------------------------------------------------


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., ProxyServer]]:
    """Start the real proxy with a policy text (or `path=` a policy file); all are stopped after the test."""
    started: list[ProxyServer] = []

    def start(policy_text: str | None = None, **kwargs: Any) -> ProxyServer:
        server = ProxyServer(policy_text, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


# ---- end proxy -----------------------------------------------------------------------

# ---- redis (rate limits' shared state) -------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session; tests keep apart by key prefix. Skipped if not installed."""
    if REDIS_SERVER is None:
        pytest.skip(REDIS_SKIP_REASON)
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to kill or freeze. Skipped if not installed."""
    if REDIS_SERVER is None:
        pytest.skip(REDIS_SKIP_REASON)
    with RedisServer() as server:
        yield server


# ---- end redis -----------------------------------------------------------------------

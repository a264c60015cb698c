"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fixtures.fake_upstream import FakeUpstream
from tests.fixtures.proxy_server import ProxyServer

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

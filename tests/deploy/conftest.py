"""deploy/compose.yaml's topology as local processes, one per test module (its own Redis too)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.topology import Topology
from tests.fixtures.redis_server import REDIS_SERVER
from tests.fixtures.redis_server import SKIP_REASON as REDIS_SKIP_REASON


@pytest.fixture(scope="module")
def topology(tmp_path_factory) -> Iterator[Topology]:
    if REDIS_SERVER is None:
        pytest.skip(REDIS_SKIP_REASON)
    running = Topology(tmp_path_factory.mktemp("compose"))
    try:
        yield running.up()
    finally:
        running.down()

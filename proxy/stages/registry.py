"""The fixed order of stages: request hooks run in this order, response hooks in reverse.

Each stage module declares its `build`: given the compile context and a route, a factory, or
None when the stage is not configured for the route. Adding a stage is one module and one
entry here.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.pipeline import StageFactory
from proxy.policy.context import BuildContext
from proxy.policy.schema import Route
from proxy.stages import auth, input_checks, ratelimit, redact, runs, usage

Builder = Callable[[BuildContext, Route], StageFactory | None]

STAGE_BUILDERS: tuple[Builder, ...] = (
    auth.build,
    input_checks.build,
    ratelimit.build,  # rate limit and budget
    runs.build,
    # truncation
    # cache
    # tool-call governance
    redact.build,
    usage.build,
)

"""The fixed order of stages, and how each is built from the policy for one route.

A builder returns a factory, or None when its stage is not configured for the route.
Request hooks run in this order; response hooks in reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from proxy.pipeline import StageFactory
from proxy.policy.schema import Policy, Route
from proxy.services import Services
from proxy.stages import auth, input_checks, ratelimit, redact, runs, usage

T = TypeVar("T")


@dataclass(slots=True)
class BuildContext:
    """What builders see while one policy compiles; `shared` builds an object once per policy."""

    policy: Policy
    services: Services
    _memo: dict[str, Any] = field(default_factory=dict)

    def shared(self, key: str, make: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]


def stage_config(ctx: BuildContext, route: Route, name: str) -> Any:
    """A stage's settings for a route: the route's override if it has one, else the policy default."""
    if route.stages is not None and name in route.stages.model_fields_set:
        return getattr(route.stages, name)
    return getattr(ctx.policy.stages, name)


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

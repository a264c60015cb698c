"""What a stage's builder sees while one policy compiles: the policy, the process's services, shared builds.

Below the stages and the compiler, so that a component a stage builds on (the limits, the
verifiers) can take the context without importing either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from proxy.policy.schema import Policy, Route
from proxy.protocols import LLM_PROTOCOLS
from proxy.services import Services

T = TypeVar("T")


@dataclass(slots=True)
class BuildContext:
    """`shared` builds an object once per policy, for every route that needs it."""

    policy: Policy
    services: Services
    # The compiled upstreams by name (proxy.policy.compile.CompiledUpstream, which sits above this module).
    upstreams: Mapping[str, Any] = field(default_factory=dict)
    _memo: dict[str, Any] = field(default_factory=dict)

    def shared(self, key: str, make: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def stage_config(self, route: Route, name: str) -> Any:
        """A stage's settings for a route: the route's override if it has one, else the policy default."""
        if route.stages is not None and name in route.stages.model_fields_set:
            return getattr(route.stages, name)
        return getattr(self.policy.stages, name)

    def speaks_llm(self, route: Route) -> bool:
        """Whether the route's upstream speaks an LLM protocol (its adapter parses bodies)."""
        return self.policy.upstreams[route.upstream].protocol in LLM_PROTOCOLS

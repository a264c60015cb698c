"""The stages, in the one order the proxy runs them, and the `stages:` model assembled from them.

Request hooks run top to bottom, response hooks bottom to top: auth, input checks, rate
limit and budget, agent runs, truncation, cache, tool governance, redaction, usage. A policy
configures stages; it never reorders them. Adding a stage is its declaration (a `StageSpec`
beside its settings model), its module under proxy/stages/, and one entry here.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, create_model

from proxy.accounting.config import USAGE_STAGE
from proxy.auth.config import AUTH_STAGE
from proxy.cache.config import CACHE_STAGE
from proxy.limits.config import RATELIMIT_STAGE, RUNS_STAGE
from proxy.policy.base import Strict
from proxy.policy.stage_spec import StageSpec
from proxy.safety.config import INPUT_STAGE, REDACTION_STAGE
from proxy.tools.config import TOOLGOV_STAGE
from proxy.tools.proposed_config import TOOL_CALLS_STAGE
from proxy.truncation.config import TRUNCATION_STAGE

STAGE_ORDER: tuple[StageSpec, ...] = (
    AUTH_STAGE,
    INPUT_STAGE,
    RATELIMIT_STAGE,  # rate limit and budget
    RUNS_STAGE,
    TRUNCATION_STAGE,  # truncation
    CACHE_STAGE,  # cache
    TOOLGOV_STAGE,  # tool governance
    TOOL_CALLS_STAGE,  # tool calls proposed by LLMs
    REDACTION_STAGE,
    USAGE_STAGE,
)


def _field(spec: StageSpec) -> tuple[Any, Any]:
    settings = spec.settings
    assert settings is not None
    if spec.default_on:
        return settings, Field(default_factory=settings, description=spec.description)
    return settings | None, Field(None, description=f"{spec.description} Unset: off.")


StagesConfig: type[Strict] = create_model(  # type: ignore[call-overload]
    "StagesConfig",
    __base__=Strict,
    __doc__="Stage settings: under `stages:` the defaults for every route, under a route its overrides.\n\n"
    "Each field is one stage's slice of the policy; a route's value replaces the default whole.",
    **{spec.name: _field(spec) for spec in STAGE_ORDER if spec.settings is not None},
)

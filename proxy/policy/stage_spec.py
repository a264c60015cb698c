"""What a stage declares about itself: its name, its slice of `stages:`, its metrics, where its code is.

A declaration is data, kept beside the stage's settings model in its component package
(proxy/safety/config.py, proxy/limits/config.py...), so the policy's vocabulary can be
assembled from it without importing any stage's code: the `stages:` model
(proxy/policy/stage_order.py), the metric registry (proxy/metrics.py) and the chain
(proxy/policy/compile.py, which imports `implementation` when a policy compiles) all read
the same declarations, listed once in `STAGE_ORDER`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxy.policy.base import Strict

MetricKind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One Prometheus collector, reachable as `metrics.<attr>`.

    Labels must come from policy names or small fixed sets, never from request input.
    `multiprocess_mode` says how workers' values combine (gauges only; see proxy/metrics.py).
    """

    attr: str
    kind: MetricKind
    name: str
    doc: str
    labels: tuple[str, ...] = ()
    multiprocess_mode: str = "all"
    buckets: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One stage of the chain.

    `settings` is the model of `stages.<name>` (None: the stage reads other parts of the
    policy, as auth reads `auth:` and `callers:`). `default_on` gives an unwritten
    `stages.<name>` its model's defaults; otherwise it is None and the stage stays off until
    written. `implementation` is the module whose `build(ctx, route)` returns the stage's
    factory for a route, or None where it does not apply.
    """

    name: str
    implementation: str
    description: str
    settings: type[Strict] | None = None
    default_on: bool = False
    metrics: tuple[MetricSpec, ...] = ()

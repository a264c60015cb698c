"""Process-wide resources that outlive a policy reload.

Stage factories are rebuilt on every reload, but what they count or write into
(shared state, the ledger, circuit breakers, metrics) must not be: those live here,
created once at startup and closed at shutdown. `agent-proxy check` compiles a
policy with empty services, so a builder must not depend on them at build time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxy.accounting.ledger import Ledger
from proxy.auth.jwks_registry import JwksRegistry
from proxy.cache.registry import CacheRegistry
from proxy.forward.registry import EndpointRegistry
from proxy.kept import KeptRegistry
from proxy.metrics import Metrics
from proxy.state.base import Store

if TYPE_CHECKING:
    from proxy.forward.transport import Transport


@dataclass(slots=True)
class Services:
    metrics: Metrics = field(default_factory=Metrics)
    ledger: Ledger | None = None  # opened at startup when `ledger.path` is set; closed after requests drain
    # Circuit breakers and in-flight counts per upstream endpoint, kept across reloads (proxy/forward/).
    endpoints: EndpointRegistry = field(default_factory=EndpointRegistry)
    # JWKS URL key sets, cached across reloads (proxy/auth/jwks_registry.py).
    jwks: JwksRegistry = field(default_factory=JwksRegistry)
    # Counters of rate limits, budgets and agent runs (proxy/state/): opened at startup from `state:`, closed last.
    state: Store | None = None
    # What stages build that a reload must not forget (tool schemas, the semantic index, ...: proxy/kept.py).
    kept: KeptRegistry = field(default_factory=KeptRegistry)
    # Response cache stores (kept in `kept`) and in-flight misses (proxy/cache/); `caches.close()` closes `kept`.
    caches: CacheRegistry = field(init=False)
    # The upstream connection pool, for a stage that calls an upstream itself (the semantic cache's embedder).
    transport: Transport | None = None

    def __post_init__(self) -> None:
        self.caches = CacheRegistry(self.kept)

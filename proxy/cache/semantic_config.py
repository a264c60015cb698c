"""Settings of the semantic cache (`stages.cache.semantic`)."""

from __future__ import annotations

from pydantic import Field

from proxy.policy.base import Strict


class SemanticConfig(Strict):
    """Near-identical questions answered from the cache; off unless enabled."""

    enabled: bool = Field(False, description="Look for a similar cached question when the exact key misses.")
    threshold: float = Field(0.9, ge=0.0, le=1.0, description="Lowest similarity that counts as the same question.")

"""The semantic index: from a question to the exact key of a cached answer to a near-identical one.

This is the interface the cache stage uses; the index itself (embedder, vector search,
precision guard) is built behind it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.cache.semantic_config import SemanticConfig

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext


class SemanticIndex:
    """Questions by partition (scope, model, system prompt, tools, sampling...), each naming an exact cache key."""

    @classmethod
    def build(cls, config: SemanticConfig, ctx: BuildContext) -> SemanticIndex | None:
        """None when semantic caching is off (and, in this build, always: no index is available)."""
        return None

    async def find(self, partition: str, text: str) -> tuple[str, float] | None:
        """The exact key of the most similar question in `partition`, and its similarity, if close enough."""
        return None

    async def add(self, partition: str, text: str, key: str) -> None:
        """Remember that `text` in `partition` is answered by the entry under `key`."""

    def discard(self, key: str) -> None:
        """Forget `key` (its entry expired or was evicted)."""

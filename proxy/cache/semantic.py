"""The semantic cache's lookup: on an exact miss, a cached prompt close enough in meaning, if the guard agrees.

The cache stage calls only `SemanticIndex`: `find` on an exact miss, `add` once an answer is
stored under its exact key, `discard` when that entry expires or is evicted. Entries are per
process, in memory, grouped by the stage's partition (a hash over scope, model, system prompt,
tools and sampling), so nothing ever matches across callers or settings. One index serves every
route of a policy with the same settings. What it has indexed outlives a policy reload while the
embedder (and, for an upstream, its model and address) and `max_entries` stay the same
(proxy/kept.py): the exact entries it points to survive reloads too. The lookup settings
(threshold, guard, candidates, timeout, text bound) are the new policy's at once; the built-in
model stays loaded across reloads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from cachetools import LRUCache

from proxy.cache.semantic_config import SemanticConfig
from proxy.cache.semantic_guard import agree
from proxy.embed import BUILTIN_NEEDS, INDEX_NEEDS, Embedder, missing
from proxy.policy.context import BuildContext

if TYPE_CHECKING:
    from proxy.embed.vector import Vector

log = logging.getLogger("agent_proxy.cache")

INLINE_SEARCH = 512  # rows searched on the loop (well under 1 ms); a larger partition is searched in a thread
INLINE_GUARD_CHARS = 600  # two prompts this long in all are checked on the loop (about 0.5 ms); longer: a thread
RECENT_VECTORS = 1024  # prompts embedded by `find`, kept for the `add` that follows a miss
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


class Indexed:
    """What the index has learnt, kept across reloads: the vectors, and the prompts just embedded."""

    __slots__ = ("index", "recent")

    def __init__(self, max_entries: int) -> None:
        from proxy.cache.semantic_index import VectorIndex  # numpy: the `semantic` extra, checked by `build`

        self.index = VectorIndex(max_entries)
        self.recent: LRUCache[str, Vector] = LRUCache(RECENT_VECTORS)


class SemanticIndex:
    def __init__(self, config: SemanticConfig, embedder: Embedder, indexed: Indexed | None = None) -> None:
        self.config = config
        self.embedder = embedder
        indexed = indexed if indexed is not None else Indexed(config.max_entries)
        self.index = indexed.index
        self._recent = indexed.recent

    @classmethod
    def build(cls, config: SemanticConfig, ctx: BuildContext) -> SemanticIndex | None:
        """None when semantic caching is off, or the built-in embedder cannot run here (one warning)."""
        if not config.enabled:
            return None
        absent = missing(BUILTIN_NEEDS if config.embedder == "builtin" else INDEX_NEEDS)
        if absent is not None:
            _warn_once(f"semantic cache off, exact caching only: {absent}")
            return None
        if config.embedder != "builtin":
            upstream = ctx.policy.upstreams.get(config.embedder)
            if upstream is None or upstream.protocol != "openai":
                raise ValueError(
                    f"stages.cache.semantic.embedder: '{config.embedder}' is neither 'builtin' "
                    "nor an upstream of protocol openai"
                )
        indexed = ctx.services.kept.get(
            "semantic index", (_vectors_from(config, ctx), config.max_entries), lambda: Indexed(config.max_entries)
        )
        return ctx.shared(
            f"semantic-index:{config.model_dump_json()}", lambda: cls(config, _embedder(config, ctx), indexed)
        )

    async def warm(self) -> bool:
        """Load the embedder's model now (in a thread), so the first requests find it: call when a policy loads.

        Without it, the first lookup starts the load and misses, as do the lookups until it is done.
        """
        return await self.embedder.warm()

    async def find(self, partition: str, text: str) -> tuple[str, float] | None:
        """The most similar entry's key and similarity, if above the threshold and the guard agrees."""
        if not text or len(text) > self.config.max_text_chars or self.index.size(partition) == 0:
            return None
        vector = await self._vector(text)
        if vector is None:
            return None
        snapshot = self.index.snapshot(partition)
        if snapshot is None:
            return None
        threshold, limit = self.config.threshold, self.config.candidates
        if snapshot.vectors.shape[0] <= INLINE_SEARCH:
            found = self.index.scores(snapshot, vector, threshold, limit)
        else:
            found = await asyncio.to_thread(self.index.scores, snapshot, vector, threshold, limit)
        for candidate in self.index.confirm(partition, found, vector, threshold):
            if not self.config.guard or await _agrees(text, candidate.text):
                self.index.touch(candidate.key)
                return candidate.key, candidate.similarity
        return None

    async def add(self, partition: str, text: str, key: str) -> bool:
        """Index the prompt of an answer just stored under `key`; False if it cannot be embedded (skipped)."""
        if not text or len(text) > self.config.max_text_chars:
            return False
        vector = await self._vector(text)
        if vector is None:
            return False
        self.index.add(partition, key, text, vector)
        return True

    def discard(self, key: str) -> None:
        self.index.remove(key)

    async def _vector(self, text: str) -> Vector | None:
        vector = self._recent.get(text)
        if vector is None:
            vector = await self.embedder.embed(text)
            if vector is not None:
                self._recent[text] = vector
        return vector


async def _agrees(text: str, other: str) -> bool:
    if len(text) + len(other) <= INLINE_GUARD_CHARS:
        return agree(text, other)
    return await asyncio.to_thread(agree, text, other)


def _vectors_from(config: SemanticConfig, ctx: BuildContext) -> tuple[str | None, ...]:
    """What decides the vectors an index holds: vectors of another model are not comparable."""
    if config.embedder == "builtin":
        return ("builtin",)
    upstream = ctx.policy.upstreams[config.embedder]
    return (config.embedder, config.model, upstream.url, *(upstream.endpoints or ()))


def _embedder(config: SemanticConfig, ctx: BuildContext) -> Embedder:
    from proxy.embed.local import LocalEmbedder
    from proxy.embed.upstream import UpstreamEmbedder

    if config.embedder == "builtin":
        return LocalEmbedder(config.threads)
    upstream = ctx.upstreams.get(config.embedder)
    if upstream is None:  # compiled without upstreams (a unit test's context): fail every lookup, never a request
        raise ValueError(f"stages.cache.semantic.embedder: upstream '{config.embedder}' is not compiled")
    services = ctx.services
    return UpstreamEmbedder(upstream, config.model, config.timeout_s, lambda: services.transport)

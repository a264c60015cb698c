"""Cache: repeated requests answered from stored answers, without going upstream.

After the limits (a hit still counts as a request against rate limits) and before tool
governance and redaction, so on the way back it sees the answer as the caller gets it,
redacted. A request is keyed over its canonical form and its scope (proxy/cache/keys.py);
on an exact miss the semantic index may name a near-identical question's entry. A hit is a
local reply: the stored body with a fresh id, or a stream synthesised in the route protocol's
format (proxy/protocols/cached.py); `x-cache` says HIT, MISS or BYPASS. Only whole, successful
answers are stored, in `on_complete`, after the caller has its answer; concurrent identical
misses wait for the first one's (proxy/cache/coalesce.py). A hit goes to the ledger as a cache
hit with no upstream cost, and what it would have cost to `agent_proxy_cache_saved_usd_total`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.accounting.pricing import price, resolve
from proxy.cache.config import CacheConfig
from proxy.cache.entry import Entry
from proxy.cache.keys import exact_key, partition, scope_id
from proxy.cache.registry import CacheRegistry
from proxy.cache.semantic import SemanticIndex
from proxy.cache.store import CacheStore, CacheUnavailable
from proxy.exchange import Exchange, Outcome, Reply
from proxy.pipeline import Stage, StageFactory
from proxy.policy.schema import Pricing, Route
from proxy.protocols.base import Usage
from proxy.protocols.sse import SSEEvent
from proxy.services import Services

if TYPE_CHECKING:
    from proxy.policy.context import BuildContext

log = logging.getLogger("agent_proxy.cache")

CACHE_HEADER = "x-cache"
SIMILARITY_HEADER = "x-cache-similarity"
_NOT_STORED_DIRECTIVES = frozenset({"no-cache", "no-store"})


class CacheStage(Stage):
    name: ClassVar[str] = "cache"

    def __init__(self, factory: CacheFactory):
        super().__init__(factory.mode)
        self._factory = factory
        self._verdict: str | None = None  # MISS or BYPASS, for the response header
        self._key: str | None = None
        self._scope = ""
        self._question: tuple[str, str] | None = None  # (semantic partition, final user text)
        self._storing = False
        self._events: list[SSEEvent] = []
        self._terminal: SSEEvent | None = None
        self._held = 0
        self._body: bytes | None = None
        self._flight: asyncio.Future[Any] | None = None
        self._served: Entry | None = None

    # ---- lookup

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        if not ex.has_llm_body or ex.method != "POST":
            return None
        factory, body, protocol = self._factory, ex.request_json, ex.protocol
        fields = protocol.cache_fields(body)
        if fields is None:
            return None
        scope = scope_id(factory.config.scope, ex.caller)
        if scope is None or self._bypassed(ex, body):
            self._result(ex, "bypass", "BYPASS")
            return None
        self._scope, route = scope, factory.route_label
        headers = [ex.headers.getall(name, ()) for name in protocol.answer_headers]
        endpoint = (ex.path, ex.query_string, headers)  # the same body elsewhere, or in another API version, differs
        self._key = key = exact_key(scope, route, endpoint, fields)
        stream = protocol.is_stream_request(body)
        if (entry := await self._read(key)) is not None and (reply := self._serve(ex, entry, stream, "hit")):
            return reply
        if factory.semantic is not None and (question := protocol.cache_question(body)) is not None:
            self._question = (partition(scope, route, endpoint, question[0]), question[1])
            if reply := await self._semantic(ex, stream):
                return reply
        if factory.config.coalesce and self.enforcing:
            coalescer = factory.caches.coalescer
            self._flight = coalescer.lead(key)
            if self._flight is None:  # the same request is upstream now: wait for its answer
                entry = await coalescer.wait(key, factory.config.coalesce_wait_s)
                if entry is not None and (reply := self._serve(ex, entry, stream, "hit")):
                    self.decide(ex, "coalesced")
                    return reply
        self._storing = True
        self._result(ex, "miss", "MISS")
        return None

    def _bypassed(self, ex: Exchange, body: Any) -> bool:
        """The caller said not to (`cache-control: no-cache` / `no-store`), or sampling is too random to reuse."""
        directives = {
            part.strip().lower() for value in ex.headers.getall("cache-control", ()) for part in value.split(",")
        }
        if directives & _NOT_STORED_DIRECTIVES:
            return True
        return ex.protocol.request_temperature(body) > self._factory.config.max_temperature

    async def _read(self, key: str) -> Entry | None:
        try:
            raw = await self._factory.store.get(key)
        except CacheUnavailable:
            self._factory.backend_error("get")
            return None
        entry = Entry.decode(raw) if raw is not None else None
        if entry is None or entry.scope != self._scope or entry.expires_at <= self._factory.caches.now():
            return None
        return entry

    async def _semantic(self, ex: Exchange, stream: bool) -> Reply | None:
        index = self._factory.semantic
        assert index is not None and self._question is not None
        try:
            found = await index.find(*self._question)
        except Exception:  # the index is an optimisation: its failure is a miss, never a failed request
            log.exception("semantic cache lookup failed")
            return None
        if found is None:
            return None
        key, similarity = found
        entry = await self._read(key)
        if entry is None:
            index.discard(key)
            return None
        return self._serve(ex, entry, stream, "semantic_hit", similarity)

    def _serve(
        self, ex: Exchange, entry: Entry, stream: bool, result: str, similarity: float | None = None
    ) -> Reply | None:
        """The stored answer as this request wants it; None when it cannot be streamed (then it is a miss)."""
        protocol = ex.protocol
        headers = {CACHE_HEADER: "HIT"}
        if similarity is not None:
            headers[SIMILARITY_HEADER] = f"{similarity:.4f}"
        if stream:
            payload = protocol.cached_stream(entry.body, protocol.stream_usage_requested(ex.request_json))
            if payload is None:
                return None
            headers.update({"content-type": "text/event-stream", "cache-control": "no-cache"})
        else:
            payload = protocol.cached_body(entry.body)
        self._factory.lookup(result)
        if self.enforcing:  # in shadow mode the reply is discarded: the request goes on untouched
            self._served = entry
            ex.cache_hit, ex.streaming = True, stream
            ex.usage = Usage(**entry.usage)
            ex.model_served = entry.model
        return Reply(200, payload, headers, reason=result)

    def _result(self, ex: Exchange, result: str, header: str) -> None:
        self._factory.lookup(result)
        self.decide(ex, result)
        self._verdict = header

    # ---- the answer, kept to be stored

    def on_response_headers(self, ex: Exchange) -> None:
        if self._verdict is not None and self.enforcing:
            ex.response_headers[CACHE_HEADER] = self._verdict
        if not (ex.status is not None and 200 <= ex.status < 300):
            self._storing = False

    def on_response_event(self, ex: Exchange, event: SSEEvent) -> list[SSEEvent]:
        if self._storing:
            self._held += len(event.raw)
            if self._held > self._factory.config.max_entry_bytes:
                self._storing, self._events = False, []
            elif ex.protocol.is_terminal_event(event):
                # Kept aside: what stages nearer the upstream flush at the end reaches this stage after the
                # terminal event, though the caller gets it before.
                self._terminal = event
            else:
                self._events.append(event)
        return [event]

    def on_response_body(self, ex: Exchange, body: bytes) -> bytes:
        if self._storing and len(body) <= self._factory.config.max_entry_bytes:
            self._body = body
        return body

    async def on_complete(self, ex: Exchange) -> None:
        entry = None
        try:
            if self._served is not None:
                self._factory.saved(ex, self._served)
            elif self._storing and (entry := self._entry(ex)) is not None:
                await self._store(entry)
        finally:
            if self._flight is not None and self._key is not None:
                self._factory.caches.coalescer.settle(self._key, self._flight, entry)

    def _entry(self, ex: Exchange) -> Entry | None:
        """The whole, successful answer; None for anything less (an error, a cut stream, an error event)."""
        if ex.outcome is not Outcome.OK or ex.error is not None or not (200 <= (ex.status or 0) < 300):
            return None
        body: Any = None
        if ex.streaming:
            assembler = ex.protocol.stream_assembler()
            if assembler is None or self._terminal is None:
                return None
            for event in (*self._events, self._terminal):
                assembler.feed(event)
            body = assembler.body(ex.usage.counts())
        elif self._body is not None and "json" in ex.response_headers.get("content-type", ""):
            try:
                body = orjson.loads(self._body)
            except orjson.JSONDecodeError:
                return None
        if not isinstance(body, dict):
            return None
        factory = self._factory
        model = ex.model_served or ex.model_requested
        expires_at = factory.caches.now() + factory.config.ttl_s
        return Entry(body, model, ex.usage.counts(), self._scope, expires_at)

    async def _store(self, entry: Entry) -> None:
        factory, key = self._factory, self._key
        assert key is not None
        raw = entry.encode()
        if len(raw) > factory.config.max_entry_bytes:
            return
        try:
            await factory.store.put(key, raw, entry.expires_at)
        except CacheUnavailable:
            factory.backend_error("put")
            return
        factory.stored()
        if factory.semantic is not None and self._question is not None:
            try:
                indexed = await factory.semantic.add(*self._question, key)
            except Exception:
                log.exception("semantic cache add failed")
                indexed = False
            if indexed:
                metrics = factory.services.metrics
                metrics.child(metrics.cache_semantic_indexed, factory.route_label).inc()


class CacheFactory(StageFactory):
    stage = CacheStage
    observes_response: ClassVar[bool] = True

    def __init__(
        self,
        config: CacheConfig,
        store: CacheStore,
        semantic: SemanticIndex | None,
        route_label: str,
        pricing: Mapping[str, Pricing],
        services: Services,
    ):
        super().__init__(config.mode)
        self.config = config
        self.store = store
        self.semantic = semantic
        self.route_label = route_label
        self.pricing = pricing
        self.services = services

    async def warm(self) -> None:
        if self.semantic is not None:
            await self.semantic.warm()

    @property
    def caches(self) -> CacheRegistry:
        return self.services.caches

    def lookup(self, result: str) -> None:
        metrics = self.services.metrics
        metrics.child(metrics.cache_lookups, self.route_label, result).inc()

    def stored(self) -> None:
        metrics = self.services.metrics
        metrics.child(metrics.cache_stored, self.route_label).inc()
        entries, size = self.caches.totals()
        metrics.cache_entries.set(entries)
        metrics.cache_bytes.set(size)

    def backend_error(self, op: str) -> None:
        metrics = self.services.metrics
        metrics.child(metrics.cache_backend_errors, op).inc()

    def saved(self, ex: Exchange, entry: Entry) -> None:
        """What the hit would have cost upstream, by the answer's own usage."""
        found = resolve(entry.model, self.pricing) or resolve(ex.model_requested, self.pricing)
        cost = price(Usage(**entry.usage), found[1]) if found is not None else None
        if cost:
            metrics = self.services.metrics
            caller = ex.caller.profile if ex.caller else "none"
            metrics.child(metrics.cache_saved_usd, self.route_label, caller).inc(cost)


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    config: CacheConfig = ctx.stage_config(route, "cache")
    if config is None or config.mode == "off" or not ctx.speaks_llm(route):
        return None
    state = ctx.policy.state
    caches = ctx.services.caches
    if state.backend == "redis":
        assert state.redis_url is not None  # the schema requires it
        store = caches.redis(state.redis_url, state.redis_timeout_ms / 1000, state.key_prefix)
    else:
        store = caches.memory(config.max_entries, config.max_bytes)
    semantic = ctx.shared(f"cache-semantic:{id(config.semantic)}", lambda: SemanticIndex.build(config.semantic, ctx))
    return CacheFactory(config, store, semantic, route.label, ctx.policy.pricing, ctx.services)

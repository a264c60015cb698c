"""Stages and the chain runner.

A stage's factory is built once per policy load from its slice of the policy; it
makes a fresh `Stage` per request, so a reload never touches an in-flight request
(a stage that keeps nothing per request is made once: `SharedStageFactory`).
Request hooks run in chain order, response hooks in reverse (usage sees the
upstream's events first, redaction rewrites them, the cache stores the result).

Shadow mode is handled here, once, for every stage: a shadow stage's local reply or
refusal is recorded as a decision and ignored, and the events it returns are
discarded in favour of the ones it was given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from proxy.errors import ProxyError
from proxy.exchange import Exchange, Reply
from proxy.policy.base import Mode
from proxy.protocols.sse import SSEEvent

log = logging.getLogger("agent_proxy.pipeline")

_DECISION_COUNTS = re.compile(r"(?::\d+(?:msgs|tokens))+$")


def decision_label(decision: str) -> str:
    """A decision as a metric label: counts a stage appends (`truncated:3msgs:1200tokens`) go to the log line only."""
    return _DECISION_COUNTS.sub("", decision)


class Stage:
    """Pass-through hooks; a stage overrides only the ones it needs."""

    name: ClassVar[str] = "stage"

    def __init__(self, mode: Mode = "enforce"):
        self.mode = mode

    @property
    def enforcing(self) -> bool:
        return self.mode == "enforce"

    def decide(self, ex: Exchange, decision: str) -> None:
        """Record what this stage did (or, in shadow mode, would have done)."""
        ex.decisions.append((self.name, decision, self.mode))

    async def on_request_headers(self, ex: Exchange) -> Reply | None:
        """Before the body is read: identity and admission. A Reply ends the request phase."""
        return None

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        """The body has arrived (`ex.request_json` parses it once): rewrite it or answer locally."""
        return None

    def on_response_headers(self, ex: Exchange) -> None:
        """The upstream's status and headers are known; nothing has gone to the caller yet."""

    def on_response_event(self, ex: Exchange, event: SSEEvent) -> list[SSEEvent]:
        """One streamed event; return what goes on ([] holds it back, several emit several)."""
        return [event]

    def on_response_body(self, ex: Exchange, body: bytes) -> bytes:
        """The whole body of a response that is not a stream."""
        return body

    def on_response_end(self, ex: Exchange) -> list[SSEEvent]:
        """The stream ended: flush whatever was held back."""
        return []

    async def on_complete(self, ex: Exchange) -> None:
        """Always runs, after the caller has its answer or went away: accounting, stores."""


class StageFactory:
    """Compiled once per policy load; `create()` is called once per request.

    A factory names its `stage` class: `create()` makes one from the factory, and the
    factory takes the stage's name.
    """

    name: ClassVar[str] = "stage"
    stage: ClassVar[Callable[[Any], Stage]]
    observes_response: ClassVar[bool] = False
    """True if the stage reads or rewrites response bodies or events."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        stage = cls.__dict__.get("stage")
        if isinstance(stage, type) and issubclass(stage, Stage):
            cls.name = stage.name

    def __init__(self, mode: Mode = "enforce"):
        self.mode = mode

    def create(self) -> Stage:
        return self.stage(self)

    async def warm(self) -> None:
        """Load what the first requests would otherwise wait for (a model, say): runs when the policy loads."""


class SharedStageFactory(StageFactory):
    """For a stage that keeps nothing per request (its hooks read only the factory and the exchange): one
    instance, made on the first request, serves every request of this policy, sparing a construction each."""

    _made: Stage | None = None

    def create(self) -> Stage:
        made = self._made
        if made is None:
            made = self._made = self.stage(self)
        return made


class Chain:
    """The enabled factories of one route, in the proxy's fixed order."""

    __slots__ = ("_hooks", "_observers", "factories", "observes_response")

    def __init__(self, factories: Sequence[StageFactory]):
        self.factories = tuple(f for f in factories if f.mode != "off")
        self.observes_response = any(f.observes_response for f in self.factories)
        self._observers = tuple(i for i, f in reversed(list(enumerate(self.factories))) if f.observes_response)
        # Per hook, the positions of the stages that override it: a pass-through hook is not called.
        self._hooks = tuple(tuple(i for i, f in enumerate(self.factories) if _overrides(f, hook)) for hook in _SKIPPED)

    def start(self) -> ChainRun:
        stages = [f.create() for f in self.factories]
        admitting, reading, heading, completing = self._hooks
        return ChainRun(
            stages,
            [stages[i] for i in self._observers],
            [stages[i] for i in admitting],
            [stages[i] for i in reading],
            [stages[i] for i in heading],
            [stages[i] for i in completing],
        )

    @property
    def names(self) -> list[str]:
        return [f"{f.name}({f.mode})" if f.mode != "enforce" else f.name for f in self.factories]


_SKIPPED = ("on_request_headers", "on_request_body", "on_response_headers", "on_complete")


def _overrides(factory: StageFactory, hook: str) -> bool:
    """False only when the factory makes its declared stage class and that class keeps the pass-through hook."""
    stage = factory.stage if type(factory).create in (StageFactory.create, SharedStageFactory.create) else None
    return not isinstance(stage, type) or getattr(stage, hook) is not getattr(Stage, hook)


class ChainRun:
    """The per-request stages of one chain, and the order their hooks run in.

    Body and event hooks run only on the stages that observe responses (`observers`, already in
    reverse order): a pass-through hook per streamed event is work for nothing.
    """

    __slots__ = ("admitting", "completing", "heading", "observers", "reading", "stages")

    def __init__(
        self,
        stages: list[Stage],
        observers: list[Stage],
        admitting: list[Stage] | None = None,
        reading: list[Stage] | None = None,
        heading: list[Stage] | None = None,
        completing: list[Stage] | None = None,
    ):
        self.stages = stages
        self.observers = observers
        # The stages whose request-header, request-body, response-header and completion hooks do something.
        self.admitting = stages if admitting is None else admitting
        self.reading = stages if reading is None else reading
        self.heading = stages if heading is None else heading
        self.completing = stages if completing is None else completing

    async def request_headers(self, ex: Exchange) -> Reply | None:
        for stage in self.admitting:
            if (reply := await self._guard(stage, ex, stage.on_request_headers)) is not None:
                return reply
        return None

    async def request_body(self, ex: Exchange) -> Reply | None:
        for stage in self.reading:
            if (reply := await self._guard(stage, ex, stage.on_request_body)) is not None:
                return reply
        return None

    @staticmethod
    async def _guard(stage: Stage, ex: Exchange, hook) -> Reply | None:  # type: ignore[no-untyped-def]
        try:
            reply = await hook(ex)
        except ProxyError as err:
            stage.decide(ex, f"refused:{err.reason or err.code or err.kind}")
            if stage.enforcing:
                raise
            return None
        if reply is None:
            return None
        stage.decide(ex, f"replied:{reply.reason or reply.status}")
        return reply if stage.enforcing else None

    def response_headers(self, ex: Exchange) -> None:
        for stage in reversed(self.heading):
            stage.on_response_headers(ex)

    def response_events(self, ex: Exchange, events: list[SSEEvent]) -> list[SSEEvent]:
        for stage in self.observers:
            out: list[SSEEvent] = []
            for event in events:
                out.extend(stage.on_response_event(ex, event))
            if stage.enforcing:
                events = out
        return events

    def response_end(self, ex: Exchange) -> list[SSEEvent]:
        """Flush each stage in turn; what a stage flushes still passes the stages outside it."""
        events: list[SSEEvent] = []
        for stage in self.observers:
            out: list[SSEEvent] = []
            for event in events:
                out.extend(stage.on_response_event(ex, event))
            flushed = stage.on_response_end(ex)
            if stage.enforcing:
                events = out + flushed
        return events

    def response_body(self, ex: Exchange, body: bytes) -> bytes:
        for stage in self.observers:
            out = stage.on_response_body(ex, body)
            if stage.enforcing:
                body = out
        return body

    async def complete(self, ex: Exchange) -> None:
        for stage in reversed(self.completing):
            try:
                await stage.on_complete(ex)
            except Exception:
                log.exception("stage %s failed in on_complete", stage.name)

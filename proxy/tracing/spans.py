"""OpenTelemetry traces, off by default: a span per request, a child span per upstream attempt.

The request span follows the GenAI semantic conventions (`gen_ai.operation.name`,
`gen_ai.request.model`, `gen_ai.usage.input_tokens` ...) and continues the caller's trace
(`traceparent`); each attempt's span is passed on to the upstream the same way. Spans carry
names and figures the policy defines or the proxy counts, never bodies, keys, paths or query
strings. OpenTelemetry is an optional extra (`pip install 'agent-proxy[otel]'`) imported only
when the policy turns tracing on; spans are exported in batches from the SDK's own thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from multidict import CIMultiDict

    from proxy.errors import ProxyError
    from proxy.exchange import Exchange
    from proxy.tracing.config import TracingConfig


# The operation by the last segment of the API path; others are not GenAI operations.
_OPERATIONS = {
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "chat",
    "messages": "chat",
}


def _operation(path: str) -> str | None:
    if path.endswith("/chat/completions"):
        return "chat"
    return _OPERATIONS.get(path.rstrip("/").rsplit("/", 1)[-1])


class Tracing:
    """The tracer of the process, and how trace context crosses the proxy."""

    def __init__(self, tracer: Any, provider: Any = None) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer = tracer
        self.provider = provider
        self.propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_config(cls, config: TracingConfig, provider: Any = None) -> Tracing | None:
        """None when tracing is off; a given `provider` (tests: an in-memory exporter) replaces the configured one."""
        if not config.enabled:
            return None
        if provider is None:
            provider = _provider(config)
        return cls(provider.get_tracer("agent-proxy"), provider)

    def start(self, ex: Exchange) -> RequestTrace:
        from opentelemetry.trace import SpanKind

        parent = self.propagator.extract(ex.headers)
        operation = _operation(ex.path) if ex.protocol.parses_json else None
        span = self.tracer.start_span(
            operation or f"{ex.method} {ex.route.label}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": ex.method, "http.route": ex.route.label},
        )
        if operation is not None:
            span.set_attribute("gen_ai.operation.name", operation)
            span.set_attribute("gen_ai.provider.name", ex.protocol.name)
        return RequestTrace(self, span, operation)

    def shutdown(self) -> None:
        """Blocking (it flushes what is batched): called from a thread at stop."""
        if self.provider is not None and hasattr(self.provider, "shutdown"):
            self.provider.shutdown()


def _provider(config: TracingConfig) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": config.service_name}),
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
    )
    if config.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: Any = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class RequestTrace:
    """One request's span; `attempt` opens a child span per upstream attempt."""

    __slots__ = ("_tracing", "operation", "span")

    def __init__(self, tracing: Tracing, span: Any, operation: str | None) -> None:
        self._tracing = tracing
        self.span = span
        self.operation = operation

    def attempt(self, upstream: str, base_url: str, headers: CIMultiDict[str], model: str | None) -> AttemptTrace:
        """A child span for one attempt; its context goes upstream in `traceparent`."""
        from opentelemetry.trace import SpanKind, set_span_in_context

        parts = urlsplit(base_url)  # host and port only: never the user info an upstream URL may hold
        attributes: dict[str, Any] = {"server.address": parts.hostname or "", "agent_proxy.upstream": upstream}
        if parts.port:
            attributes["server.port"] = parts.port
        if model is not None:
            attributes["gen_ai.request.model"] = model
        span = self._tracing.tracer.start_span(
            f"{self.operation or 'forward'} {upstream}",
            context=set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        self._tracing.propagator.inject(headers, context=set_span_in_context(span))
        return AttemptTrace(span)

    def end(self, ex: Exchange) -> None:
        """After completion: usage and cost are final."""
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        model = ex.model_requested
        if self.operation is not None:
            if model is not None:
                span.set_attribute("gen_ai.request.model", model)
                span.update_name(f"{self.operation} {model}")
            if ex.model_served is not None:
                span.set_attribute("gen_ai.response.model", ex.model_served)
            usage = ex.usage
            if usage.input_tokens is not None:  # all input kinds, as the conventions count them
                inputs = usage.input_tokens + (usage.cached_input_tokens or 0) + (usage.cache_write_tokens or 0)
                span.set_attribute("gen_ai.usage.input_tokens", inputs)
            if usage.output_tokens is not None:
                span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
            span.set_attribute("gen_ai.request.stream", ex.streaming)
        if ex.caller is not None:
            span.set_attribute("agent_proxy.caller", ex.caller.name)
        if ex.upstream_name is not None:
            span.set_attribute("agent_proxy.upstream", ex.upstream_name)
        if ex.outcome is not None:
            span.set_attribute("agent_proxy.outcome", ex.outcome.value)
        if ex.status is not None:
            span.set_attribute("http.response.status_code", ex.status)
        if ex.error is not None:
            span.set_attribute("error.type", ex.error.code or ex.error.kind)
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class AttemptTrace:
    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def answered(self, status: int) -> None:
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()

    def failed(self, error: ProxyError | BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        code = getattr(error, "code", None) or type(error).__name__
        self.span.set_attribute("error.type", code)
        self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()

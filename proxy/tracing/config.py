"""The policy's tracing settings (`server.tracing`): read at start, a change needs a restart."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from proxy.policy.base import Strict


class TracingConfig(Strict):
    """Read at start: a change needs a restart."""

    enabled: bool = Field(False, description="Export a span per request and per upstream attempt.")
    exporter: Literal["otlp", "console"] = Field(
        "otlp", description="`otlp`: OTLP over HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (the standard variables apply)."
    )
    sample_ratio: float = Field(1.0, ge=0, le=1, description="Share of new traces kept; a caller's decision wins.")
    service_name: str = Field("agent-proxy", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")

"""OpenTelemetry traces, off by default: the settings (config.py) and the spans (spans.py)."""

from __future__ import annotations

from proxy.tracing.config import TracingConfig
from proxy.tracing.spans import RequestTrace, Tracing

__all__ = ["RequestTrace", "Tracing", "TracingConfig"]

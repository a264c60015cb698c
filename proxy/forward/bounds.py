"""The policy's bounds on upstreams: timeouts, sizes of what an upstream may send, the connection pool.

An upstream is a peer the proxy does not control (a tool server of another team, a local
model server), so every wait and every buffer it can fill has a bound here, with a default
a production sidecar can keep. Exceeding one ends the exchange cleanly: a 502 or 504 in the
route protocol's shape, or the stream's error event once bytes went to the caller, and a
count in `agent_proxy_errors_total`.
"""

from __future__ import annotations

from pydantic import Field

from proxy.policy.base import Strict

KIB = 1024
MIB = 1024 * KIB


class Timeouts(Strict):
    connect_s: float = Field(5.0, gt=0, le=600)
    first_byte_s: float = Field(60.0, gt=0, le=3600, description="Until the response headers arrive.")
    idle_s: float = Field(30.0, gt=0, le=3600, description="Longest gap between two chunks of a response.")
    total_s: float = Field(600.0, gt=0, le=86400)
    session_order_s: float = Field(
        5.0,
        ge=0,
        le=600,
        description="mcp: a session's request waits at most this for the session's GET stream, opened before it, to "
        "have its answer head from the upstream (proxy/forward/session_order.py); then it is sent anyway.",
    )
    session_stream_grace_s: float = Field(
        0.25,
        ge=0,
        le=60,
        description="mcp: once a new session's first request is answered, its next requests wait at most this for "
        "the GET stream the client is expected to open (0: they do not wait for one that has not arrived).",
    )


class ResponseLimits(Strict):
    """What one answer of this upstream may hold. Each bound counts decoded bytes, after gzip or deflate."""

    max_header_bytes: int = Field(
        16 * KIB, ge=1 * KIB, le=1 * MIB, description="One header line (or the status line); longer: 502."
    )
    max_headers: int = Field(100, ge=8, le=1000, description="Header lines in the response head; more: 502.")
    max_body_bytes: int = Field(
        64 * MIB,
        ge=1 * KIB,
        le=1024 * MIB,
        description="A body a stage reads whole (usage, redaction): compressed and decoded; longer: 502.",
    )
    max_event_bytes: int = Field(
        8 * MIB, ge=1 * KIB, le=256 * MIB, description="One server-sent event; longer: the stream's error event."
    )
    max_response_bytes: int = Field(
        1024 * MIB,
        ge=1 * KIB,
        le=1 << 40,
        description="All of one answer, streamed or passed through; past it the answer is cut with an error.",
    )
    max_inflation_ratio: float = Field(
        100.0,
        ge=2,
        le=100_000,
        description="Decoded bytes per compressed byte of a gzip or deflate answer (checked past its first 1 MiB).",
    )


class UpstreamPool(Strict):
    """The process-wide connection pool (read at start: a change needs a restart)."""

    connections_per_origin: int = Field(
        256, ge=1, le=100_000, description="Open connections to one scheme, host and port at most; more wait."
    )
    keepalive_s: float = Field(30.0, gt=0, le=3600, description="An idle pooled connection is closed after this.")
    dns_cache_s: float = Field(10.0, ge=0, le=3600, description="How long a resolved address is reused.")

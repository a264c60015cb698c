"""The policy's `stages.toolgov`: tool governance on `mcp` and `http` routes that name a `tool:` server.

Kept beside the tool components it configures, with the stage's declaration. Patterns in
`tools` match a tool's name as its server lists it (`read_*`); the first match gives that
tool's timeout, rate limit and breaker. Who may call which tool is the caller's
`callers.<profile>.tools` list (`server:tool` globs), not this section.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from pydantic import Field, field_validator

from proxy.policy.base import Glob, Mode, Strict
from proxy.policy.stage_spec import MetricSpec, StageSpec
from proxy.tools.arguments import schema_problem

OUTCOMES = (
    "ok",
    "tool_error",
    "rpc_error",
    "forbidden",
    "invalid_arguments",
    "header_mismatch",
    "rate_limited",
    "circuit_open",
    "timeout",
    "upstream_error",
    "client_gone",
)
"""How one tool call ended: the `outcome` label and the ledger's `tool_outcome` (a fixed set)."""
OTHER_TOOL = "_other"
"""The metric label of a tool past `max_tool_labels` distinct names of one server."""


class ToolBreaker(Strict):
    """A circuit breaker per tool: opens after consecutive failures (timeouts, upstream errors)."""

    failure_threshold: int = Field(5, ge=1, le=1000, description="Consecutive failed calls that open it.")
    recovery_timeout_s: float = Field(30.0, gt=0, le=3600, description="How long it stays open before one probe.")


class ToolSettings(Strict):
    """What applies to every call of the tools a pattern matches."""

    timeout_s: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="The whole call must be answered within this (504, or the stream's error event); "
        "unset: the upstream's `timeouts`.",
    )
    requests_per_minute: int | None = Field(
        None, gt=0, le=10_000_000, description="Calls per minute of each caller to this tool (state: shared store)."
    )
    circuit_breaker: ToolBreaker | None = Field(None, description="A breaker for this tool alone; unset: none.")


class ToolGovConfig(Strict):
    """Tool calls governed one by one: allowlists, argument validation, per-tool limits, metrics and ledger."""

    mode: Mode = Field("enforce", description="`shadow` records refusals without refusing; `off` removes the stage.")
    filter_tools_list: bool = Field(
        True, description="Remove from `tools/list` answers the tools the caller may not call."
    )
    validate_arguments: bool = Field(
        True,
        description="Check `tools/call` arguments against the tool's `inputSchema` from the session's "
        "`tools/list`; a tool never listed in the session is not checked.",
    )
    tools: dict[Glob, ToolSettings] = Field(
        default_factory=dict,
        max_length=256,
        description="Per-tool settings by tool-name pattern (the first match applies); on an http route the "
        "tool is the route's `tool:` name.",
    )
    body_schema: dict[str, Any] | None = Field(
        None,
        description="http tool routes: a JSON Schema the request body must satisfy (a 400 naming the field). "
        "Set it per route under `routes[].stages.toolgov`.",
    )
    max_sessions: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Sessions whose tool schemas are remembered (least recently used are forgotten first).",
    )
    max_tools_per_session: int = Field(
        1024, ge=1, le=100_000, description="Tool schemas remembered per session; the rest go unchecked."
    )
    schema_ttl_s: float = Field(3600.0, gt=0, le=86_400, description="A session's schemas are forgotten after this.")
    max_tool_labels: int = Field(
        256,
        ge=1,
        le=10_000,
        description=f"Distinct tool names per server in metric labels and breakers; the rest count as `{OTHER_TOOL}`.",
    )

    @field_validator("body_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            problem = schema_problem(schema)
            if problem is not None:
                raise ValueError(f"not a valid JSON Schema: {problem}")
        return schema

    def settings_for(self, tool: str) -> ToolSettings | None:
        return next((settings for pattern, settings in self.tools.items() if fnmatchcase(tool, pattern)), None)


TOOLGOV_STAGE = StageSpec(
    name="toolgov",
    implementation="proxy.stages.toolgov",
    settings=ToolGovConfig,
    default_on=True,
    description="Tool governance on `mcp` and `http` routes with a `tool:` name (docs/tools.md).",
    metrics=(
        MetricSpec(
            "tool_calls",
            "counter",
            "agent_proxy_tool_calls",
            "Tool calls by server (the route's `tool:`), tool and outcome.",
            ("server", "tool", "outcome"),
        ),
        MetricSpec(
            "tool_errors",
            "counter",
            "agent_proxy_tool_errors",
            "Tool calls that did not succeed, by server and kind (an outcome other than ok).",
            ("server", "kind"),
        ),
        MetricSpec(
            "tool_seconds",
            "histogram",
            "agent_proxy_tool_call_seconds",
            "Latency of tool calls that reached the server, by server and tool.",
            ("server", "tool"),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        ),
        MetricSpec(
            "tools_hidden",
            "counter",
            "agent_proxy_tools_hidden",
            "Tools removed from `tools/list` answers because the caller may not call them, by server.",
            ("server",),
        ),
    ),
)

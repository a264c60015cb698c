"""The policy's `stages.tool_calls`: which functions an LLM may ask a caller to call, and what happens otherwise.

A function is allowed for a caller when a glob of `allow` matches its name, or when the
caller profile's `tools` list (the same list that governs MCP and HTTP tools) matches
`<namespace>:<name>` or names the namespace itself. So a platform team writes a caller's
tools once: `tools: [files:read_*, fn:get_weather]` lets it reach the `files` tool server's
`read_*` tools and be asked to call the function `get_weather`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from proxy.policy.base import Glob, Mode, Name, Strict
from proxy.policy.stage_spec import MetricSpec, StageSpec

ToolCallAction = Literal["allow", "flag", "deny"]


class ToolCallsConfig(Strict):
    """Tool calls proposed by the LLM (openai and anthropic routes), checked against what the caller may use."""

    mode: Mode = Field("enforce", description="`shadow` records what would be flagged or denied and changes nothing.")
    action: ToolCallAction = Field(
        "deny",
        description="For an answer asking for a function the caller may not use: allow (count it), flag (the header "
        "`x-agent-proxy-tool-flagged` on a whole answer, a log line and a metric) or deny (a 403 in the protocol's "
        "shape; a stream ends with the protocol's error event before the call reaches the caller).",
    )
    allow: list[Glob] = Field(
        default_factory=list, max_length=256, description="Function names (globs) every caller may be asked to call."
    )
    namespace: Name | None = Field(
        "fn",
        description="Callers' `tools` patterns allow the function `f` when they match `<namespace>:f` (or name the "
        "namespace alone); set it to an MCP server's name when the agent exposes that server's tools as functions. "
        "Null: only `allow` counts.",
    )
    filter_request_tools: bool = Field(
        False,
        description="Remove the functions the caller may not use from the request's `tools` (and legacy "
        "`functions`) before it goes upstream; a request forcing one with `tool_choice` is refused with a 403.",
    )
    max_held_events: int = Field(
        32,
        ge=1,
        le=10_000,
        description="Stream events held while a call's function name is unknown; past this the call is judged "
        "as unnamed (never allowed unless `allow` has `*`).",
    )
    max_held_bytes: int = Field(
        256 * 1024, ge=1024, le=64 * 1024 * 1024, description="Bytes of stream events held, the same way."
    )


TOOL_CALLS_STAGE = StageSpec(
    name="tool_calls",
    implementation="proxy.stages.tool_calls",
    settings=ToolCallsConfig,
    description="Tool calls proposed by the LLM checked against the caller's allowed functions (proxy/tools/).",
    metrics=(
        # decision: allowed, flagged, denied; in shadow mode shadow_flagged, shadow_denied. Never the function name.
        MetricSpec(
            "tool_calls_proposed",
            "counter",
            "agent_proxy_tool_calls_proposed",
            "Function calls proposed in LLM answers, by route and decision.",
            ("route", "decision"),
        ),
    ),
)

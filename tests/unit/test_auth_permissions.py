"""Caller profiles compiled into allowlists."""

from __future__ import annotations

import pytest

from proxy.auth.permissions import Globs, Permissions, caller_may_use_tool
from proxy.policy.schema import CallerProfile


def test_globs():
    assert Globs(["*"]).match("anything") and Globs(["*"]).everything
    models = Globs(["gpt-4o-mini", "claude-*"])
    assert models.match("gpt-4o-mini") and models.match("claude-3-5-haiku")
    assert not models.match("gpt-4o") and not models.match("GPT-4O-MINI") and not models.match("gpt-4o-mini-x")
    assert not Globs([]).match("") and not Globs([]).match("x")


def test_profile_defaults_allow_models_and_routes_but_no_tools():
    permissions = Permissions(CallerProfile())
    assert permissions.may_use_model("any") and permissions.may_use_route("openai")
    assert not permissions.may_use_tool("search") and not permissions.may_reach_tool_server("search")


@pytest.mark.parametrize(
    ("tool", "use", "reach"),
    [
        ("search", True, True),
        ("search:web", False, False),
        ("files", False, True),
        ("files:read_file", True, True),
        ("files:write_file", False, False),
        ("shell", False, False),
    ],
)
def test_tools(tool, use, reach):
    profile = CallerProfile(tools=["search", "files:read_*"])
    assert caller_may_use_tool(profile, tool) is use
    assert Permissions(profile).may_reach_tool_server(tool) is reach

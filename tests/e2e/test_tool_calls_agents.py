"""The OpenAI Agents SDK's tool loop through the proxy: an allowed function runs and the loop ends with the
model's answer; a forbidden one is refused before the agent could run it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest

agents = pytest.importorskip("agents")

from tests.e2e.test_tool_calls import policy  # noqa: E402
from tests.fixtures.proxy_server import DEMO_KEY  # noqa: E402
from tests.fixtures.tool_call_upstream import ToolCallUpstream  # noqa: E402

agents.set_tracing_disabled(True)


@pytest.fixture
def upstream() -> Iterator[ToolCallUpstream]:
    with ToolCallUpstream() as fake:
        yield fake


def _agent(proxy, ran: list[str], api: str = "chat") -> agents.Agent:
    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append("get_weather")
        return f"sunny in {city}"

    @agents.function_tool
    def delete_repo(city: str) -> str:
        """Deletes a repository."""
        ran.append("delete_repo")
        return "deleted"

    client = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)
    if api == "chat":
        model = agents.OpenAIChatCompletionsModel(model="gpt-4o", openai_client=client)
    else:  # the SDK's default
        model = agents.OpenAIResponsesModel(model="gpt-4o", openai_client=client)
    return agents.Agent(name="helper", instructions="Help.", model=model, tools=[get_weather, delete_repo])


def _run(agent: agents.Agent, streamed: bool) -> str:
    async def go() -> str:
        if not streamed:
            return (await agents.Runner.run(agent, "weather in Paris?")).final_output
        result = agents.Runner.run_streamed(agent, "weather in Paris?")
        async for _ in result.stream_events():
            pass
        return result.final_output

    return asyncio.run(go())


APIS = pytest.mark.parametrize("api", ["chat", "responses"])
STREAMED = pytest.mark.parametrize("streamed", [False, True])


@APIS
@STREAMED
def test_the_agent_loop_runs_an_allowed_function(proxy_factory, upstream, api, streamed):
    proxy = proxy_factory(policy(upstream.url, "{action: deny}"))
    ran: list[str] = []
    assert _run(_agent(proxy, ran, api), streamed) == "done: sunny in Paris"
    assert ran == ["get_weather"]
    assert len(upstream.script.requests) == 2


@APIS
@STREAMED
def test_the_agent_never_runs_a_forbidden_function(proxy_factory, upstream, api, streamed):
    proxy = proxy_factory(policy(upstream.url, "{action: deny}"))
    upstream.script.calls = ["delete_repo"]
    ran: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        _run(_agent(proxy, ran, api), streamed)
    assert "delete_repo" in str(caught.value)
    assert ran == []
    assert len(upstream.script.requests) == 1

"""SDK clients on the module's `proxy` fixture, for the end-to-end tests that define one."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.fixtures.proxy_server import DEMO_KEY


@pytest.fixture
def oai(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=DEMO_KEY, max_retries=0)


@pytest.fixture
def claude(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=DEMO_KEY, max_retries=0)

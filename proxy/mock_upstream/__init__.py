"""Deterministic fake LLM server speaking the OpenAI and Anthropic wire formats.

Used by the ``mock-upstream`` command, the offline demo policy and the test suite's fake upstream.
"""

from .app import build_mock_app, run_mock_upstream
from .behaviour import FAULTS, MockBehaviour, RecordedRequest
from .text import answer_words, count_tokens
from .wire import BEHAVIOUR_KEY

__all__ = [
    "BEHAVIOUR_KEY",
    "FAULTS",
    "MockBehaviour",
    "RecordedRequest",
    "answer_words",
    "build_mock_app",
    "count_tokens",
    "run_mock_upstream",
]

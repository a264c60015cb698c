"""What tool-call governance costs per streamed event, and what exact redaction costs per http SSE event.

Every event of an LLM stream on a route with `stages.tool_calls` is looked at: a text delta
only through its raw bytes (no call marker, not parsed), a tool-call delta parsed and judged.
Run:  python bench/tool_calls.py [--events 200000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.protocols import PROTOCOLS
from proxy.protocols.sse import SSEEvent
from proxy.safety.config import RedactionConfig
from proxy.safety.content import CompiledRedaction, ExchangeRedaction
from proxy.safety.events import StreamRewriter
from proxy.tools.proposed import CallGate, Verdicts

PROSE = "the quick brown fox writes to jane.doe@example.com about card 4111 1111 1111 1111"
BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}


def chat(delta: dict) -> bytes:
    return SSEEvent.from_json({**BASE, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}).raw


def claude(payload: dict) -> bytes:
    return SSEEvent.from_json(payload, event=payload["type"]).raw


def per_event(raws: list[bytes], protocol: str, n: int) -> float:
    """Microseconds per event for reading its calls and passing it through the gate."""
    adapter = PROTOCOLS[protocol]
    gate = CallGate(Verdicts("deny", lambda name: name == "get_weather"), 32, 1 << 18)
    events = [SSEEvent(raws[i % len(raws)]) for i in range(n)]  # fresh events: nothing parsed yet
    start = time.perf_counter()
    for event in events:
        gate.event(event, adapter.event_tool_calls(event))
    return (time.perf_counter() - start) / n * 1e6


def per_text_event(make: Callable[[int], bytes], n: int) -> float:
    redaction = ExchangeRedaction(CompiledRedaction.from_config(RedactionConfig(output=["pii", "secrets"])), "t")
    rewriter = StreamRewriter(PROTOCOLS["http"], redaction)
    events = [SSEEvent(make(i)) for i in range(n)]
    start = time.perf_counter()
    for event in events:
        rewriter.event(event)
    rewriter.end()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    n = parser.parse_args().events
    words = PROSE.split()
    rows = [
        ("openai text deltas (no call)", per_event([chat({"content": " hello"})], "openai", n)),
        ("openai tool-call argument deltas", per_event(
            [chat({"tool_calls": [{"index": 0, "id": "c", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]}),
             chat({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]})], "openai", n)),
        ("anthropic text deltas (no call)", per_event(
            [claude({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " hi"}})],
            "anthropic", n)),
        ("anthropic input_json deltas", per_event(
            [claude({"type": "content_block_start", "index": 1,
                     "content_block": {"type": "tool_use", "id": "t", "name": "get_weather", "input": {}}}),
             claude({"type": "content_block_delta", "index": 1,
                     "delta": {"type": "input_json_delta", "partial_json": '{"ci'}})], "anthropic", n)),
        ("http plain-text SSE, exact redaction", per_text_event(
            lambda i: SSEEvent.build(words[i % len(words)] + " ", "delta").raw, n // 4)),
    ]  # fmt: skip
    print(f"{'events':<40}{'µs/event':>10}")
    for name, micros in rows:
        print(f"{name:<40}{micros:>10.2f}")


if __name__ == "__main__":
    main()

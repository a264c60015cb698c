"""CPU per streamed event of output redaction, in-process: the figure the full chain pays per chunk.

Word-sized OpenAI chat chunks (as models stream them) go through `StreamRewriter` with the
full-chain policy's detectors (bench/policies/full-chain.yaml), the events already parsed as
the usage stage leaves them. Reports process CPU time (robust on a shared machine) per event:
the best of several rounds, for prose and for prose with PII; and how many of the events
had to be re-serialised. Run:
    python bench/stream_events.py [--events 20000] [--rounds 5] [--words 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from redaction import PII, PROSE  # bench/redaction.py: the same texts

from proxy.protocols import PROTOCOLS
from proxy.protocols.sse import SSEEvent
from proxy.safety.config import RedactionConfig
from proxy.safety.content import CompiledRedaction, ExchangeRedaction
from proxy.safety.events import StreamRewriter

FULL_CHAIN = ["email", "phone", "ssn", "credit_card", "iban", "api_key", "password"]


def _events(count: int, dense: bool, per_event: int = 1) -> list[bytes]:
    unit = PROSE * 4 + (PII if dense else PROSE)
    words = (unit * (count * per_event * 8 // len(unit) + 2)).split(" ")[: count * per_event]
    words = [" ".join(words[at : at + per_event]) for at in range(0, len(words), per_event)]
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    return [
        SSEEvent.from_json(
            {**base, "choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w}, "finish_reason": None}]}
        ).raw
        for i, w in enumerate(words)
    ]


def cpu_per_event(raws: list[bytes], rounds: int) -> tuple[float, int, bytes]:
    """Best CPU µs per event over `rounds`, events re-serialised, and the events sent (to compare runs)."""
    compiled = CompiledRedaction.from_config(RedactionConfig(output=FULL_CHAIN))
    protocol = PROTOCOLS["openai"]
    best = float("inf")
    rewritten, text = 0, b""
    for _ in range(rounds):
        events = [SSEEvent(raw) for raw in raws]
        for event in events:
            event.json()
        rewriter = StreamRewriter(protocol, ExchangeRedaction(compiled, "bench"))
        out: list[SSEEvent] = []
        started = time.process_time()
        for event in events:
            out.extend(rewriter.event(event))
        out.extend(rewriter.end())
        best = min(best, time.process_time() - started)
        sent = set(raws)
        rewritten = sum(1 for event in out if event.raw not in sent)
        text = b"".join(event.raw for event in out)
    return best / len(raws) * 1e6, rewritten, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--words", type=int, default=1, help="words per event")
    parser.add_argument("--text-out", type=Path, help="write the events sent here (to compare two versions)")
    args = parser.parse_args()
    texts = []
    for dense in (False, True):
        raws = _events(args.events, dense, args.words)
        micros, rewritten, text = cpu_per_event(raws, args.rounds)
        kind = "prose with PII" if dense else "prose         "
        print(f"{kind}  {micros:6.2f} µs CPU per event   re-serialised {rewritten}/{len(raws)}")
        texts.append(text)
    if args.text_out:
        args.text_out.write_bytes(b"\n---\n".join(texts))


if __name__ == "__main__":
    main()

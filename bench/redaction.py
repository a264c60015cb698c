"""What redaction costs: throughput on whole bodies (MB/s) and time added per streamed event (µs).

In-process, on the code the redaction stage runs (proxy/safety/): a whole chat completion body
is redacted as `on_response_body` does (parse, redact the message text, serialise if
changed), and a stream of word-sized deltas goes event by event through the rewriter as
`on_response_event` does. Also reports how much text the hold-back keeps, and the false
positives on the test corpus. Run:
    python bench/redaction.py [--size-kb 512] [--events 4000]
Figures are for this machine only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from proxy.protocols import PROTOCOLS
from proxy.protocols.sse import SSEEvent
from proxy.safety.config import RedactionConfig
from proxy.safety.content import CompiledRedaction, ExchangeRedaction
from proxy.safety.events import StreamRewriter

PROSE = (
    "The deployment finished at 14:05 and every health check passed. We rolled the change out to three regions, "
    "watched the error rate for twenty minutes, and saw no regression in latency or throughput. Next week we will "
    "migrate the remaining services, update the runbook, and schedule a review with the platform team. "
)
PII = (
    "Contact jane.doe@example.com or call +1 415 555 0132; the card on file is 4111 1111 1111 1111 and the "
    "refund goes to DE89 3704 0044 0532 0130 00. "
)
SETS = {
    "policy-shape set": ["email", "phone", "ssn", "credit_card", "iban", "api_key", "password"],
    "all detectors": ["all"],
}


def _text(size: int, dense: bool) -> str:
    unit = PROSE * 4 + (PII if dense else PROSE)  # about one PII sentence per 1.5 KB when dense
    return (unit * (size // len(unit) + 1))[:size]


def _redaction(names: list[str]) -> ExchangeRedaction:
    return ExchangeRedaction(CompiledRedaction.from_config(RedactionConfig(output=names)), "bench")


def body_throughput(names: list[str], size: int, dense: bool) -> float:
    body = orjson.dumps(
        {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": _text(size, dense)}}]}
    )
    protocol = PROTOCOLS["openai"]
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        _redaction(names).redact_body(protocol, body, "application/json")
        runs.append(time.perf_counter() - started)
    return len(body) / min(runs) / 1e6


def _chat_events(pieces: list[str]) -> list[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    return [
        SSEEvent.from_json({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}).raw
        for p in pieces
    ]


def stream_latency(names: list[str], count: int, dense: bool) -> tuple[float, float, float, int]:
    """Mean and p99 µs per event, mean and max characters held back after an event."""
    words = _text(count * 6, dense).split(" ")[:count]
    raws = _chat_events([w if i == 0 else " " + w for i, w in enumerate(words)])
    protocol = PROTOCOLS["openai"]
    best: list[float] = []
    held: list[int] = []
    for attempt in range(3):
        rewriter = StreamRewriter(protocol, _redaction(names))
        events = [SSEEvent(raw) for raw in raws]
        for event in events:
            event.json()  # the usage stage, later in the chain, has parsed it already
        times = []
        for event in events:
            started = time.perf_counter()
            rewriter.event(event)
            times.append(time.perf_counter() - started)
            if attempt == 0:
                held.append(sum(c.pipe._steps[0].pending for c in rewriter._channels.values()))  # type: ignore[union-attr]
        if not best or statistics.mean(times) < statistics.mean(best):
            best = times
    best.sort()
    return statistics.mean(best) * 1e6, best[int(len(best) * 0.99)] * 1e6, statistics.mean(held), max(held)


def corpus_report() -> None:
    try:
        from proxy.safety.catalogue import BUILTIN
        from proxy.safety.scanner import Scanner
        from proxy.safety.stream_redactor import redact_whole
        from tests.data.redaction_corpus import CLEAN, NEGATIVE, POSITIVE
    except ImportError as exc:  # cryptography missing: the corpus generates keys
        print(f"corpus: skipped ({exc})")
        return
    scanner = Scanner(BUILTIN)
    texts = CLEAN + [t for items in NEGATIVE.values() for t in items]
    flagged = sum(1 for t in texts if redact_whole(scanner, lambda d, v: d.label, t) != t)
    positives = [p for items in POSITIVE.values() for p in items]
    missed = sum(
        1 for p in positives if any(v in redact_whole(scanner, lambda d, v: d.label, p.text) for v in p.values)
    )
    print(
        f"corpus (all detectors): recall {len(positives) - missed}/{len(positives)}, "
        f"false positives {flagged}/{len(texts)} texts ({flagged / len(texts):.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-kb", type=int, default=512, help="size of the whole body")
    parser.add_argument("--events", type=int, default=4000, help="streamed events (one word each)")
    args = parser.parse_args()
    size = args.size_kb * 1024
    print(f"whole bodies: an OpenAI chat completion of {args.size_kb} KB, redacted whole")
    for label, names in SETS.items():
        clean = body_throughput(names, size, dense=False)
        dense = body_throughput(names, size, dense=True)
        print(f"  {label:<18} clean text {clean:6.1f} MB/s   one PII sentence per ~1.5 KB {dense:6.1f} MB/s")
    print(f"streams: {args.events} chat chunks of one word each, through the event rewriter")
    for label, names in SETS.items():
        for dense in (False, True):
            mean, p99, held, most = stream_latency(names, args.events, dense)
            kind = "with PII " if dense else "clean    "
            print(
                f"  {label:<18} {kind} {mean:6.1f} µs/event (p99 {p99:6.1f})   "
                f"held back: {held:4.1f} chars on average, {most} at most"
            )
    corpus_report()


if __name__ == "__main__":
    main()

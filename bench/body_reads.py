"""What reading a streamed body costs the upstream client, per chunk that had to be waited for.

A producer hands the response one chunk per turn of the event loop, as a paced stream does, and
the reader waits for each with a deadline, as `upstream.iter_body` does. In process, no sockets:
only the client's own buffering, wake-ups and deadline handling are timed. Run:
  python bench/body_reads.py [--chunks 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.upstream_http.response import Response

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the `fast` extra
    uvloop = None


class FedByHand:
    """The connection side of a `Response`, with no socket behind it."""

    def resume(self) -> None:
        pass

    def finish(self, reusable: bool) -> None:
        pass


async def per_chunk_us(chunks: int, idle_s: float = 30.0) -> float:
    loop = asyncio.get_running_loop()
    response = Response(FedByHand(), "GET", None)  # type: ignore[arg-type]
    response._on_head(200, "OK")
    event = b"data: " + b"x" * 200 + b"\n\n"

    def feed(sent: int = 0) -> None:
        if sent < chunks:
            response._on_body(event)
            loop.call_soon(feed, sent + 1)
        else:
            response._on_end()

    loop.call_soon(feed)
    start, read = time.perf_counter(), 0
    while await response.readany(loop.time() + idle_s):
        read += 1
    response.release()
    return (time.perf_counter() - start) / read * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="the median of this many rounds is reported")
    args = parser.parse_args()
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None)
    with runner:
        rounds = [runner.run(per_chunk_us(args.chunks)) for _ in range(args.rounds)]
    loop_name = "uvloop" if uvloop else "asyncio"
    print(f"{statistics.median(rounds):.2f} us per waited chunk ({loop_name}; the producer's turn included)")


if __name__ == "__main__":
    main()

"""A fake OpenAI upstream fast enough not to be what a gateway benchmark measures.

A bare asyncio protocol (uvloop when installed), HTTP/1.1 keep-alive, no framework: a chat
completion answers at once with a fixed body; a streamed one (`"stream": true` in the body)
sends `--events` chunks `--interval-ms` apart, then a usage chunk and `[DONE]`, as OpenAI does.
Only what `bench/compare` sends is understood: a request line, headers, a Content-Length body.

    python bench/fast_upstream.py --port 9000 [--events 24] [--interval-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import orjson

WORD = "token "


def completion(words: int) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "fake-model",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": WORD * words}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": words, "total_tokens": 12 + words},
        }
    )


def chunk(payload: dict[str, object]) -> bytes:
    data = b"data: " + orjson.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", **payload}) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def events(count: int) -> list[bytes]:
    delta = {"created": 1700000000, "model": "fake-model"}
    out = [chunk({**delta, "choices": [{"index": 0, "delta": {"role": "assistant", "content": WORD}}]})]
    out += [chunk({**delta, "choices": [{"index": 0, "delta": {"content": WORD}}]}) for _ in range(count - 1)]
    out.append(chunk({**delta, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    usage = {"prompt_tokens": 12, "completion_tokens": count, "total_tokens": 12 + count}
    out.append(chunk({**delta, "choices": [], "usage": usage}))
    data = b"data: [DONE]\n\n"
    out.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
    return out


class Upstream(asyncio.Protocol):
    def __init__(self, json_response: bytes, stream_head: bytes, stream_events: list[bytes], interval_s: float):
        self.json_response = json_response
        self.stream_head = stream_head
        self.stream_events = stream_events
        self.interval_s = interval_s
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.streaming = False
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._serve()

    def _serve(self) -> None:
        while not self.streaming:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                end = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : end if end > 0 else len(head)])
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            assert self.transport is not None
            if b'"stream":true' in body.replace(b" ", b""):
                self.streaming = True
                self.transport.write(self.stream_head)
                self._next_event(0)
            else:
                self.transport.write(self.json_response)

    def _next_event(self, index: int) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self.transport.write(self.stream_events[index])
        if index + 1 < len(self.stream_events):
            self.loop.call_later(self.interval_s, self._next_event, index + 1)
        else:
            self.streaming = False
            self._serve()


async def serve(port: int, events_count: int, interval_ms: float, words: int) -> None:
    body = completion(words)
    json_response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    stream_head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    stream_events = events(events_count)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(json_response, stream_head, stream_events, interval_ms / 1000), "127.0.0.1", port, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--events", type=int, default=24, help="content events per stream (default: %(default)s)")
    parser.add_argument("--interval-ms", type=float, default=5, help="between stream events (default: %(default)s)")
    parser.add_argument("--words", type=int, default=24, help="words in a JSON answer (default: %(default)s)")
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.port, args.events, args.interval_ms, args.words))


if __name__ == "__main__":
    main()

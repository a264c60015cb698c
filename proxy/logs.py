"""Structured JSON logs: one line per request, and the proxy's own events.

The request line carries identifiers and figures only: never bodies, keys, tokens
or query strings (they may hold credentials). Every field that comes from a request
is bounded and either a name the policy defines or sanitised: the path is logged as
the matched route's path or prefix plus the length of the rest (a well-known API
endpoint excepted), the model is cut to `MAX_MODEL_CHARS` of a restricted set.
Records are formatted and written to stderr by a listener thread, so a slow log pipe
never stalls the event loop.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import logging.handlers
import queue
import re
import sys
import threading
from typing import Any

import orjson

from proxy.exchange import Exchange

access_log = logging.getLogger("agent_proxy.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


MAX_QUEUED_RECORDS = 10_000
EXIT_FLUSH_S = 2.0


class _BoundedQueue(queue.SimpleQueue[logging.LogRecord]):
    """`queue.Queue(maxsize)` as far as the log handler and listener use it, on the C SimpleQueue: a record's
    way to the writer thread costs a small part of Queue's condition-variable handshake."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._putting = threading.Lock()  # the bound holds with several threads logging

    def put_nowait(self, item: logging.LogRecord) -> None:
        with self._putting:
            if self.qsize() >= self.maxsize:
                raise queue.Full
            self.put(item)


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread; never blocks, and drops (and counts) when the queue is full."""

    def __init__(self, records: queue.Queue[logging.LogRecord] | _BoundedQueue):
        super().__init__(records)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # one process: formatted by the writer thread, off the event loop

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes in the listener thread; says how many records were dropped while it could not keep up."""

    def __init__(self, source: _QueueHandler):
        super().__init__(sys.stderr)
        self._source = source
        self._reported = 0

    def emit(self, record: logging.LogRecord) -> None:
        dropped = self._source.dropped
        if dropped != self._reported:
            lost = logging.makeLogRecord({"name": "agent_proxy.logs", "levelno": logging.WARNING})
            lost.levelname, lost.msg = "WARNING", "log records dropped: the log stream was not read fast enough"
            lost.fields = {"count": dropped - self._reported}
            self._reported = dropped
            super().emit(lost)
        super().emit(record)


_listener: logging.handlers.QueueListener | None = None


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr, written by a thread: a slow or blocked log pipe never stalls the event loop.

    Records wait in a queue of at most MAX_QUEUED_RECORDS; past that they are dropped, and
    the next line written says how many.
    """
    global _listener
    # The logging HOWTO's "Optimization": no caller frame walk, thread or process lookups per record;
    # the JSON line never shows them, and the access log writes one record per request.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    _stop_listener()
    records = _BoundedQueue(MAX_QUEUED_RECORDS)
    handler = _QueueHandler(records)
    writer = _StderrHandler(handler)
    writer.setFormatter(JsonFormatter())
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    atexit.register(_stop_listener)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").disabled = True


def _stop_listener() -> None:
    """At exit: write what is queued, waiting at most EXIT_FLUSH_S for a pipe nobody reads."""
    global _listener
    listener, _listener = _listener, None
    if listener is None or listener._thread is None:
        return
    with contextlib.suppress(queue.Full):
        listener.enqueue_sentinel()
    listener._thread.join(EXIT_FLUSH_S)  # a daemon thread: if the pipe stays stuck, the process exits anyway


MAX_MODEL_CHARS = 128
LOGGED_MODELS = 256  # model names (each at most MAX_MODEL_CHARS) whose logged form is remembered
_NOT_MODEL_CHAR = re.compile(r"[^A-Za-z0-9._:/@+-]")
# What follows a prefix route's prefix that is logged as is: the LLM APIs' own endpoints, no caller data.
KNOWN_ENDPOINTS = frozenset(
    {
        "chat/completions",
        "completions",
        "responses",
        "embeddings",
        "models",
        "moderations",
        "messages",
        "messages/count_tokens",
        "v1/chat/completions",
        "v1/completions",
        "v1/responses",
        "v1/embeddings",
        "v1/models",
        "v1/messages",
        "v1/messages/count_tokens",
    }
)


def logged_path(ex: Exchange) -> str:
    """The route's own path or prefix, then `[N bytes]` for the rest (ids, names, emails live there)."""
    route = ex.route
    if route.prefix is None:
        return route.path or "?"
    rest = ex.path[len(route.prefix) :]
    if not rest or rest in KNOWN_ENDPOINTS:
        return route.prefix + rest
    return f"{route.prefix}[{len(rest.encode('utf-8', 'surrogateescape'))} bytes]"


def logged_model(model: Any) -> str | None:
    """The model as the caller named it, cut and restricted to the characters model names use."""
    if not isinstance(model, str):
        return None
    if len(model) <= MAX_MODEL_CHARS:
        return _short_model(model)
    return _NOT_MODEL_CHAR.sub("?", model[:MAX_MODEL_CHARS]) + "..."


@functools.lru_cache(maxsize=LOGGED_MODELS)
def _short_model(model: str) -> str:
    """Remembered: the log line and the ledger record both name the model, on every request."""
    return _NOT_MODEL_CHAR.sub("?", model)


def request_fields(ex: Exchange) -> dict[str, Any]:
    caller = ex.caller
    fields: dict[str, Any] = {
        "request_id": ex.request_id,
        "method": ex.method[:16],  # an HTTP token (the parser checked its characters)
        "path": logged_path(ex),
        "route": ex.route.label,
        "caller": caller.name if caller else None,
        "key_id": caller.key_id if caller else None,
        "upstream": ex.upstream_name,
        "model": logged_model(ex.model_requested),
        "status": ex.status,
        "outcome": ex.outcome.value if ex.outcome else None,
        "stream": ex.streaming,
        "latency_ms": round(ex.elapsed_s * 1000, 2),
        "ttfb_ms": round(ex.ttfb_s * 1000, 2) if ex.ttfb_s is not None else None,
    }
    if ex.decisions:
        fields["decisions"] = [
            f"{stage}:{decision}" + ("" if mode == "enforce" else f"({mode})") for stage, decision, mode in ex.decisions
        ]
    if ex.redactions:
        redactions: dict[str, dict[str, int]] = {}
        for (direction, detector), count in ex.redactions.items():
            redactions.setdefault(direction, {})[detector] = count
        fields["redactions"] = redactions
    if ex.error is not None:
        fields["error"] = {"kind": ex.error.kind, "code": ex.error.code, "source": ex.error.source}
    if ex.usage.known:
        usage = ex.usage
        fields["tokens"] = usage.counts()
        fields["cost_usd"] = ex.cost_usd
        fields["usage_estimated"] = ex.usage_estimated
    return fields


def log_request(ex: Exchange) -> None:
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("request", extra={"fields": request_fields(ex)})


def log_event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})

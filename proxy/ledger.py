"""The spend ledger: one durable row per request, in SQLite (WAL), written off the event loop.

Requests only enqueue a record (a lock-free put); a writer thread commits what has
queued once per flush interval, in one transaction, and on `flush()` and `close()`.
WAL with synchronous=NORMAL keeps every committed batch through a crash of the process,
so a kill -9 loses at most the records of the last interval, and a graceful stop none.
A failed write never reaches a caller: it is logged, counted, and the batch is retried
at the next interval (up to `max_pending` records, beyond which the oldest are dropped
and counted).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from concurrent.futures import Future
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from proxy.metrics import Metrics

log = logging.getLogger("agent_proxy.ledger")

SCHEMA_VERSION = 1


@dataclass(slots=True)
class Record:
    """One request. Token counts are None where nothing was counted (errors, tool routes)."""

    request_id: str
    ts: float  # unix time the request started
    caller: str | None
    key_id: str | None
    profile: str | None
    route: str
    upstream: str | None
    model_requested: str | None
    model_served: str | None
    model_priced: str | None  # the price-table name it matched, None if unpriced
    status: int | None
    outcome: str | None
    stream: bool
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    latency_ms: float
    ttfb_ms: float | None
    cache_hit: bool
    estimated: bool
    session_id: str | None


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Record))
_SQL_TYPES = {"ts": "REAL NOT NULL", "request_id": "TEXT NOT NULL", "route": "TEXT NOT NULL"}
_REAL = {"cost_usd", "latency_ms", "ttfb_ms"}
_INT = {"status", "stream", "cache_hit", "estimated"} | {c for c in COLUMNS if c.endswith("_tokens")}
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS requests (\n  "
    + ",\n  ".join(
        f"{c} {_SQL_TYPES.get(c) or ('REAL' if c in _REAL else 'INTEGER' if c in _INT else 'TEXT')}" for c in COLUMNS
    )
    + "\n);\n"
    "CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);\n"
    "CREATE INDEX IF NOT EXISTS requests_caller_ts ON requests (caller, ts);\n"
)
INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        return sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=5)
    conn = sqlite3.connect(str(path), timeout=5, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # in WAL: durable through a process crash, fsync at checkpoints
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return conn


_STOP = object()


class LedgerError(Exception):
    """The ledger file cannot be opened: the proxy does not start without the ledger it was told to keep."""


class Ledger:
    """Process-wide (it outlives policy reloads); `open()` at startup, `close()` at shutdown."""

    def __init__(
        self, conn: sqlite3.Connection, path: str, flush_interval_s: float, metrics: Metrics, max_pending: int = 100_000
    ):
        self.path = path
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self._conn = conn
        self._metrics = metrics
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: str, flush_interval_s: float, metrics: Metrics) -> Ledger:
        """Blocking (file I/O): call it from a thread. Raises if the file cannot be opened."""
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = connect(path)
        except (sqlite3.Error, OSError) as exc:
            metrics.ledger_errors.labels("open").inc()
            raise LedgerError(f"cannot open the ledger at {path}: {exc}") from exc
        return cls(conn, path, flush_interval_s, metrics)

    def record(self, record: Record) -> None:
        """Called on the event loop: never blocks, never raises."""
        if self._closed:
            self._metrics.ledger_records.labels("dropped").inc()
            log.error("ledger record after close dropped", extra={"fields": {"request_id": record.request_id}})
            return
        self._queue.put(record)

    async def flush(self) -> None:
        """Commit everything recorded so far (the admin report calls this before it reads)."""
        if self._closed:
            return
        done: Future[None] = Future()
        self._queue.put(done)
        self._wake.set()
        await asyncio.wrap_future(done)

    async def close(self) -> None:
        """Write what is queued and stop the writer; records after this are dropped and counted."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._wake.set()
        await asyncio.to_thread(self._thread.join)

    # ---- the writer thread

    def _run(self) -> None:
        """Wake once per interval (or when asked), never per record: the event loop keeps the GIL."""
        pending: list[Record] = []
        stop = False
        while not stop:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            waiters: list[Future[None]] = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                elif isinstance(item, Future):
                    waiters.append(item)
                else:
                    pending.append(item)  # type: ignore[arg-type]
            pending = self._write(pending, final=stop)
            for waiter in waiters:
                waiter.set_result(None)
        try:
            self._conn.close()
        except sqlite3.Error:
            log.exception("closing the ledger failed")

    def _write(self, pending: list[Record], final: bool) -> list[Record]:
        """Commit `pending` in one transaction; return what is still to be written."""
        if not pending:
            return pending
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.executemany(INSERT, [astuple(r) for r in pending])
        except sqlite3.Error as exc:
            self._metrics.ledger_errors.labels("write").inc()
            log.error("ledger write failed; retrying at the next flush", extra={"fields": {"error": str(exc)}})
            excess = len(pending) if final else max(0, len(pending) - self.max_pending)
            if excess:
                self._metrics.ledger_records.labels("dropped").inc(excess)
                log.error("ledger records dropped", extra={"fields": {"count": excess}})
            return pending[excess:]
        self._metrics.ledger_records.labels("written").inc(len(pending))
        return []

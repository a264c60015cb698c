"""The spend ledger: one durable row per request, in SQLite (WAL), written off the event loop.

Requests only enqueue a record (a deque append); a writer thread commits what has
queued once per flush interval (sooner when the queue is half full), in one
transaction, and on `flush()` and `close()`. WAL with synchronous=NORMAL keeps every
committed batch through a crash of the process, so a kill -9 loses at most the records
of the last interval, and a graceful stop none.

Nothing a record holds can stop the writer: a batch the database refuses because of one
row (a value SQLite cannot bind, a constraint) is written again row by row, and only the
refused row is left out (logged by request id, never its content, and counted). A
database that cannot be written at all (locked, disk full, table gone) is logged and
counted and the batch retried at the next interval, up to `max_pending` records (beyond
that the oldest are dropped and counted). The queue holds at most `max_queued` records:
past that a new record is dropped and counted. Any other failure of the writer is
logged and the loop goes on; if the thread ends anyway it is started again on the next
record or flush. `flush()` waits at most `flush_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from proxy.metrics import Metrics

log = logging.getLogger("agent_proxy.accounting.ledger")

SCHEMA_VERSION = 2  # 2: tool_server, tool, tool_outcome (added to a version-1 file on open)


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
    # Tool routes (proxy/stages/toolgov.py): the server (the route's `tool:`), the tool and how the call ended.
    tool_server: str | None = None
    tool: str | None = None
    tool_outcome: str | None = None


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


_NEVER_NULL = frozenset({"request_id", "ts", "route", "latency_ms"})  # bound as they are, whatever they hold
_BOOLEAN = frozenset({"stream", "cache_hit", "estimated"})
# How a row is bound, cheaper than sqlite3's own way for its commonest values and stored the same. sqlite3 binds an
# exact int, float or str at once, but None and booleans only after a search for an adapter (about 1.1K
# instructions each, ten of a usual row's values). So None is bound as a float NaN, which SQLite stores as NULL
# (sqlite3VdbeMemSetDouble: it has no NaN), and True / False as the integers 1 / 0, what their adapter gives.
# tests/unit/test_ledger_binding.py holds every column's stored value and type to the plain binding's.
_NULL = float("nan")


def _bound(column: str, value: str) -> str:
    if column in _NEVER_NULL:
        return value
    if column in _BOOLEAN:
        return f"(1 if {value} is True else 0 if {value} is False else {value})"
    return f"(_NULL if {value} is None else {value})"


def _row_functions() -> tuple[Callable[..., tuple[object, ...]], Callable[[Record], tuple[object, ...]]]:
    """`make_row(*values)`: a record's values (in column order, positionally) as bound; `row_of(record)`: the same from
    a Record. Spelled-out tuples (as dataclasses writes its own __init__): dataclasses.astuple deep-copies every
    value, and `attrgetter(*COLUMNS)` costs 2.5 times as much. The usage stage builds its rows with `make_row` rather
    than a Record first: 27 attributes stored and read again cost more than the row itself."""
    namespace: dict[str, Any] = {"_NULL": _NULL}
    bound = ", ".join(_bound(c, c) for c in COLUMNS)
    exec(f"def make_row({', '.join(COLUMNS)}):\n    return ({bound},)", namespace)
    exec(f"def row_of(r):\n    return make_row({', '.join(f'r.{c}' for c in COLUMNS)})", namespace)
    return namespace["make_row"], namespace["row_of"]


make_row, row_of = _row_functions()
Row = tuple[object, ...]
"""A record as `make_row` binds it: what the ledger queues and writes."""
_REQUEST_ID = COLUMNS.index("request_id")
INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
# What a row's values other than `make_row`'s cover: None bound through a registered adapter is one dict hit, not the
# search for one (a failed attribute lookup with its exception, twice); stored the same, NULL and 0 or 1.
sqlite3.register_adapter(type(None), {}.get)  # None -> None, bound as NULL
sqlite3.register_adapter(bool, int)


BUSY_TIMEOUT_S = 5.0  # how long opening waits for another process (a worker) holding the file
_SQLITE_BUSY = 5


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        return sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
    enter_wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")  # in WAL: durable through a process crash, fsync at checkpoints
    conn.executescript(SCHEMA)
    migrate(conn)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return conn


def enter_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, waiting out another process doing the same on a new file.

    SQLite answers a journal-mode change that meets another connection's lock with
    SQLITE_BUSY at once, without its busy handler: two workers opening a new ledger
    together would otherwise see one of them fail to start.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != _SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)  # off the event loop: `Ledger.open` runs in a thread


def migrate(conn: sqlite3.Connection) -> None:
    """Columns added since a file was created are added to it (nullable: older rows have none)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
    for column in COLUMNS:
        if column not in present:
            kind = "REAL" if column in _REAL else "INTEGER" if column in _INT else "TEXT"
            conn.execute(f"ALTER TABLE requests ADD COLUMN {column} {kind}")


_STOP = object()
MAX_QUEUED = 100_000
MAX_PENDING = 100_000
FLUSH_TIMEOUT_S = 5.0
RESTART_PAUSE_S = 1.0  # a writer that keeps dying is restarted at most this often


class LedgerError(Exception):
    """The ledger file cannot be opened: the proxy does not start without the ledger it was told to keep."""


class Ledger:
    """Process-wide (it outlives policy reloads); `open()` at startup, `close()` at shutdown."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        flush_interval_s: float,
        metrics: Metrics,
        max_pending: int = MAX_PENDING,
        max_queued: int = MAX_QUEUED,
        flush_timeout_s: float = FLUSH_TIMEOUT_S,
    ):
        self.path = path
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.max_queued = max_queued
        self.flush_timeout_s = flush_timeout_s
        self._conn = conn
        self._metrics = metrics
        self._records: deque[Row] = deque()  # append and popleft are atomic: no lock on the event loop
        self._control: queue.SimpleQueue[object] = queue.SimpleQueue()  # flush waiters and the stop mark
        self._pending: list[Row] = []  # taken from the queue, not yet committed
        self._closed = False
        self._wake = threading.Event()
        self._started_at = -RESTART_PAUSE_S
        self._thread = self._start_writer()

    @classmethod
    def open(
        cls, path: str, flush_interval_s: float, metrics: Metrics, max_queued: int = MAX_QUEUED,
        flush_timeout_s: float = FLUSH_TIMEOUT_S,
    ) -> Ledger:  # fmt: skip
        """Blocking (file I/O): call it from a thread. Raises if the file cannot be opened."""
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = connect(path)
        except (sqlite3.Error, OSError) as exc:
            metrics.ledger_errors.labels("open").inc()
            raise LedgerError(f"cannot open the ledger at {path}: {exc}") from exc
        return cls(conn, path, flush_interval_s, metrics, max_queued=max_queued, flush_timeout_s=flush_timeout_s)

    def record(self, record: Record) -> None:
        """Called on the event loop: never blocks, never raises."""
        self.record_row(row_of(record))

    def record_row(self, row: Row) -> None:
        """`record` of a record's `row`: what the usage stage calls."""
        if self._closed:
            self._metrics.ledger_records.labels("dropped").inc()
            log.error("ledger record after close dropped", extra={"fields": {"request_id": row[_REQUEST_ID]}})
            return
        queued = len(self._records)
        if queued >= self.max_queued:
            self._metrics.ledger_records.labels("dropped").inc()
            log.error("ledger queue full; record dropped", extra={"fields": {"request_id": row[_REQUEST_ID]}})
            return
        self._records.append(row)
        if queued + 1 == self.max_queued // 2:  # don't let a burst wait for the interval
            self._wake.set()
        if not self._writing:  # `_supervise`'s first test, without its call on every record
            self._supervise()

    async def flush(self) -> bool:
        """Commit everything recorded so far, waiting at most `flush_timeout_s`; False if that ran out.

        The admin report calls this before it reads: a stuck database delays it, never hangs it.
        """
        if self._closed:
            return True
        self._supervise()
        done: Future[None] = Future()
        self._control.put(done)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.wrap_future(done), self.flush_timeout_s)
        except TimeoutError:
            log.warning("ledger flush timed out", extra={"fields": {"timeout_s": self.flush_timeout_s}})
            return False
        return True

    async def close(self) -> None:
        """Write what is queued and stop the writer; records after this are dropped and counted."""
        if self._closed:
            return
        self._closed = True
        self._supervise(force=True)
        self._control.put(_STOP)
        self._wake.set()
        await asyncio.to_thread(self._thread.join)

    @property
    def writer_alive(self) -> bool:
        return self._thread.is_alive()

    # ---- the writer thread and its supervision

    def _start_writer(self) -> threading.Thread:
        self._started_at = time.monotonic()
        self._writing = True
        thread = threading.Thread(target=self._run_until_it_ends, name="ledger-writer", daemon=True)
        thread.start()
        return thread

    def _supervise(self, force: bool = False) -> None:
        """Start the writer again if it died (it catches everything it can; this is the last resort)."""
        if self._writing or self._thread.is_alive():  # the flag first: is_alive() takes a lock, on every record
            return
        if not force and time.monotonic() - self._started_at < RESTART_PAUSE_S:
            return
        self._metrics.ledger_errors.labels("writer").inc()
        log.error("the ledger writer had stopped; started again")
        self._thread = self._start_writer()

    def _run_until_it_ends(self) -> None:
        try:
            self._run()
        finally:  # however the thread ends, `_supervise` then asks the thread itself
            self._writing = False

    def _run(self) -> None:
        """Wake once per interval (or when asked), never per record: the event loop keeps the GIL."""
        stop = False
        while not stop:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            waiters: list[Future[None]] = []
            try:
                while True:
                    try:
                        item = self._control.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                    else:
                        waiters.append(item)  # type: ignore[arg-type]
                for _ in range(len(self._records)):
                    self._pending.append(self._records.popleft())
                self._pending = self._write(self._pending, final=stop)
            except BaseException:  # the writer must outlive anything a batch can do
                self._metrics.ledger_errors.labels("writer").inc()
                log.exception("ledger writer failed; going on")
            finally:
                for waiter in waiters:
                    with contextlib.suppress(InvalidStateError):  # its flush() gave up waiting
                        waiter.set_result(None)
        try:
            self._conn.close()
        except sqlite3.Error:
            log.exception("closing the ledger failed")

    def _write(self, pending: list[Row], final: bool) -> list[Row]:
        """Commit `pending` in one transaction; return what is still to be written."""
        if not pending:
            return pending
        try:
            self._commit(pending)
        except sqlite3.OperationalError as exc:  # the database, not a row: keep the batch for the next interval
            return self._keep(pending, final, exc)
        except BaseException:  # a row the database refuses: write the others without it
            try:
                written = self._commit_rows(pending)
            except BaseException as exc:  # in this thread nothing is for anyone else to catch
                return self._keep(pending, final, exc)
            self._metrics.ledger_records.labels("written").inc(written)
            return []
        self._metrics.ledger_records.labels("written").inc(len(pending))
        return []

    def _commit(self, pending: list[Row]) -> None:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")  # the write lock at once: other workers wait (busy timeout)
            self._conn.executemany(INSERT, pending)

    def _commit_rows(self, pending: list[Row]) -> int:
        """One transaction, each row on its own: a refused row is counted and left out."""
        written = 0
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")  # the write lock at once: other workers wait (busy timeout)
            for row in pending:
                try:
                    self._conn.execute(INSERT, row)
                except sqlite3.OperationalError:
                    raise
                except BaseException as exc:  # even SystemExit from a value's adapter is one bad row
                    self._metrics.ledger_records.labels("refused").inc()
                    fields = {"request_id": row[_REQUEST_ID], "error": type(exc).__name__}
                    log.error("ledger row refused by the database; left out", extra={"fields": fields})
                else:
                    written += 1
        return written

    def _keep(self, pending: list[Row], final: bool, exc: Exception) -> list[Row]:
        self._metrics.ledger_errors.labels("write").inc()
        log.error("ledger write failed; retrying at the next flush", extra={"fields": {"error": str(exc)}})
        excess = len(pending) if final else max(0, len(pending) - self.max_pending)
        if excess:
            self._metrics.ledger_records.labels("dropped").inc(excess)
            log.error("ledger records dropped", extra={"fields": {"count": excess}})
        return pending[excess:]

"""The ledger's writer: batches, flushes, durability across close, and disk errors that never raise."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading

import pytest

from proxy.accounting.ledger import COLUMNS, Ledger, LedgerError, Record, connect
from proxy.metrics import Metrics
from tests.fixtures.waiting import wait_for


def record(n: int, **changes) -> Record:
    base = Record(
        request_id=f"req-{n}", ts=1_700_000_000.0 + n, caller="demo", key_id="k1", profile="default", route="openai",
        upstream="up", model_requested="gpt-4o", model_served="gpt-4o-2024-08-06", model_priced="gpt-4o", status=200,
        outcome="ok", stream=True, input_tokens=4, output_tokens=12, cached_input_tokens=0, cache_write_tokens=None,
        reasoning_tokens=0, cost_usd=0.00013, latency_ms=3.5, ttfb_ms=1.25, cache_hit=False, estimated=False,
        session_id="s-1",
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def rows(path) -> list[tuple]:
    conn = connect(path, readonly=True)
    try:
        return conn.execute(f"SELECT {', '.join(COLUMNS)} FROM requests ORDER BY ts").fetchall()
    finally:
        conn.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_records_round_trip_and_the_file_is_wal(tmp_path, metrics):
    path = tmp_path / "sub" / "ledger.db"
    ledger = Ledger.open(str(path), 60, metrics)
    ledger.record(record(1))
    ledger.record(record(2, cost_usd=None, model_priced=None, estimated=True, session_id=None))
    await ledger.flush()
    stored = rows(path)
    assert dict(zip(COLUMNS, stored[0], strict=True)) == dataclasses.asdict(record(1))
    assert stored[1][COLUMNS.index("cost_usd")] is None and stored[1][COLUMNS.index("estimated")] == 1
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert sample(metrics, "agent_proxy_ledger_records_total", result="written") == 2
    await ledger.close()


async def test_the_writer_commits_each_interval_without_being_asked(tmp_path, metrics):
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(str(path), 0.02, metrics)
    for n in range(50):
        ledger.record(record(n))
    wait_for(lambda: len(rows(path)) == 50)
    await ledger.close()


async def test_close_writes_what_is_queued_and_later_records_are_counted_as_dropped(tmp_path, metrics):
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(str(path), 60, metrics)
    for n in range(100):
        ledger.record(record(n))
    await ledger.close()
    assert len(rows(path)) == 100
    ledger.record(record(101))
    assert sample(metrics, "agent_proxy_ledger_records_total", result="dropped") == 1
    await ledger.flush()  # a no-op after close, never a hang


async def test_a_failed_write_is_counted_kept_and_retried(tmp_path, metrics, caplog):
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(str(path), 60, metrics)
    other = sqlite3.connect(path)
    other.execute("DROP TABLE requests")
    other.commit()
    ledger.record(record(1))
    await ledger.flush()  # the write fails inside the writer; nothing raises here
    assert sample(metrics, "agent_proxy_ledger_errors_total", op="write") == 1
    assert "ledger write failed" in caplog.text
    connect(path).close()  # the table is back
    ledger.record(record(2))
    await ledger.flush()
    assert [r[0] for r in rows(path)] == ["req-1", "req-2"]
    await ledger.close()


async def test_beyond_max_pending_the_oldest_failed_records_are_dropped(tmp_path, metrics):
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(str(path), 60, metrics)
    ledger.max_pending = 3
    sqlite3.connect(path, isolation_level=None).execute("DROP TABLE requests")
    for n in range(5):
        ledger.record(record(n))
    await ledger.flush()
    assert sample(metrics, "agent_proxy_ledger_records_total", result="dropped") == 2
    connect(path).close()
    await ledger.close()
    assert [r[0] for r in rows(path)] == ["req-2", "req-3", "req-4"]


def test_an_unopenable_ledger_raises_and_is_counted(tmp_path, metrics):
    (tmp_path / "dir").mkdir()
    with pytest.raises(LedgerError, match="cannot open the ledger"):
        Ledger.open(str(tmp_path / "dir"), 1, metrics)
    assert sample(metrics, "agent_proxy_ledger_errors_total", op="open") == 1


class _Dies:
    """A value whose adaptation raises SystemExit, which `except Exception` would let end the writer thread."""

    def __conform__(self, protocol):
        raise SystemExit("gone")


async def test_a_row_the_database_refuses_is_left_out_and_the_rest_are_written(tmp_path, metrics, caplog):
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(str(path), 60, metrics)
    ledger.record(record(1))
    ledger.record(record(2, input_tokens=2**64, session_id="secret text"))  # SQLite cannot bind it
    ledger.record(record(3, cost_usd=object()))  # nor this
    ledger.record(record(4))
    await ledger.flush()
    assert [r[0] for r in rows(path)] == ["req-1", "req-4"]
    assert sample(metrics, "agent_proxy_ledger_records_total", result="refused") == 2
    assert sample(metrics, "agent_proxy_ledger_records_total", result="written") == 2
    refused = [r.fields for r in caplog.records if r.getMessage().startswith("ledger row refused")]
    assert refused == [
        {"request_id": "req-2", "error": "OverflowError"},
        {"request_id": "req-3", "error": "ProgrammingError"},
    ]
    ledger.record(record(5))
    await ledger.flush()
    assert [r[0] for r in rows(path)][-1] == "req-5" and ledger.writer_alive
    await ledger.close()


async def test_a_full_queue_drops_new_records_and_counts_them(tmp_path, metrics):
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(str(path), 60, metrics, max_queued=4)
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the writer waits on the database; records queue up behind it
    ledger.record(record(0))
    ledger.flush_timeout_s = 0.05
    assert await ledger.flush() is False  # bounded, though the writer is stuck
    for n in range(1, 10):
        ledger.record(record(n))
    assert sample(metrics, "agent_proxy_ledger_records_total", result="dropped") == 5
    lock.execute("ROLLBACK")
    ledger.flush_timeout_s = 30
    assert await ledger.flush() is True
    await ledger.close()
    assert [r[0] for r in rows(path)] == [f"req-{n}" for n in range(5)]


async def test_a_value_that_raises_what_no_except_exception_catches_is_one_refused_row(tmp_path, metrics):
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(str(path), 60, metrics)
    ledger.record(record(1, session_id=_Dies()))
    ledger.record(record(2))
    assert await ledger.flush() is True
    assert ledger.writer_alive and [r[0] for r in rows(path)] == ["req-2"]
    assert sample(metrics, "agent_proxy_ledger_records_total", result="refused") == 1
    await ledger.close()


async def test_a_broken_connection_keeps_records_within_the_bound_and_flush_answers(tmp_path, metrics):
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(str(path), 60, metrics)
    ledger.max_pending = 3
    ledger._conn.close()  # every later statement raises ProgrammingError, not OperationalError
    for n in range(5):
        ledger.record(record(n))
    assert await ledger.flush() is True
    assert ledger.writer_alive
    assert sample(metrics, "agent_proxy_ledger_records_total", result="dropped") == 2
    await ledger.close()


async def test_a_version_1_file_gains_the_tool_columns_and_keeps_its_rows(tmp_path, metrics):
    path = tmp_path / "old.db"
    old_columns = [c for c in COLUMNS if c not in ("tool_server", "tool", "tool_outcome")]
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE requests ({', '.join(old_columns)})")
    old = dataclasses.astuple(record(1))[: len(old_columns)]
    conn.execute(f"INSERT INTO requests VALUES ({', '.join('?' for _ in old_columns)})", old)
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    ledger = Ledger.open(str(path), 0.05, metrics)
    ledger.record(record(2, tool_server="files", tool="read_file", tool_outcome="forbidden"))
    await ledger.close()
    found = rows(path)
    assert [row[COLUMNS.index("request_id")] for row in found] == ["req-1", "req-2"]
    assert found[0][COLUMNS.index("tool")] is None
    assert found[1][-3:] == ("files", "read_file", "forbidden")
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == 2
    check.close()


def test_workers_opening_a_new_ledger_together_all_start(tmp_path):
    """`serve --workers N` opens one new file from N processes at once: none may fail to start.

    Two connections in threads race the same way two processes do (less often: about 1
    round in 40 failed before opening waited on the journal-mode change, 1 in 5 with processes).
    """
    failures: list[Exception] = []

    def open_at(path: str, start: threading.Barrier) -> None:
        start.wait()
        try:
            connect(path).close()
        except sqlite3.Error as exc:
            failures.append(exc)

    for attempt in range(300):
        path, start = str(tmp_path / f"ledger-{attempt}.sqlite3"), threading.Barrier(2)
        opening = [threading.Thread(target=open_at, args=(path, start)) for _ in range(2)]
        for thread in opening:
            thread.start()
        for thread in opening:
            thread.join()
    assert failures == []

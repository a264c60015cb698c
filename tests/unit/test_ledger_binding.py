"""What the ledger stores for None and booleans (NULL, the integers 0/1: as sqlite3 binds them), the same through
its own binding (`make_row`) as through sqlite3's, and a writer thread that ended started again."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.accounting.ledger import COLUMNS, INSERT, RESTART_PAUSE_S, SCHEMA, Ledger, Record, connect, row_of
from proxy.metrics import Metrics


async def test_none_is_stored_as_null_and_booleans_as_integers(tmp_path):
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(str(path), 60, Metrics())
    ledger.record(_record("r-1"))
    await ledger.flush()
    await ledger.close()
    conn = connect(path, readonly=True)
    try:
        names = [f.name for f in dataclasses.fields(Record)]
        types = conn.execute(f"SELECT {', '.join(f'typeof({n})' for n in names)} FROM requests").fetchone()
        values = conn.execute(f"SELECT {', '.join(names)} FROM requests").fetchone()
    finally:
        conn.close()
    stored = dict(zip(names, zip(types, values, strict=True), strict=True))
    assert stored["caller"] == ("null", None) and stored["cost_usd"] == ("null", None)
    assert stored["tool_outcome"] == ("null", None)
    assert stored["stream"] == ("integer", 1) and stored["cache_hit"] == ("integer", 0)
    assert stored["estimated"] == ("integer", 1)


_TEXT = st.text(max_size=8)
_INTEGER = st.integers(-(2**63), 2**63 - 1)  # what SQLite binds; a larger one is a refused row either way
_REAL = st.floats(allow_nan=True, allow_infinity=True)
_BY_TYPE = {str: _TEXT, int: _INTEGER, float: _REAL, bool: st.booleans()}


def _values(annotation: object) -> st.SearchStrategy[object]:
    """A column's values by its Record annotation: `T` or `T | None`."""
    kinds = [k for k in typing.get_args(annotation) if k is not type(None)] or [annotation]
    strategy = _BY_TYPE[kinds[0]]  # type: ignore[index]
    return st.none() | strategy if len(typing.get_args(annotation)) > 1 else strategy


_RECORDS = st.builds(Record, **{name: _values(kind) for name, kind in typing.get_type_hints(Record).items()})


@settings(max_examples=300, deadline=None)
@given(record=_RECORDS)
def test_the_ledger_binding_stores_what_sqlite3_binding_stores(record):
    """Every column's stored type and value, or the row's refusal: a row bound by `make_row` (None as a NaN,
    booleans as 1 / 0) against the record's own values bound by sqlite3 (its adapters)."""
    assert _stored(row_of(record)) == _stored(tuple(getattr(record, c) for c in COLUMNS))


def _stored(values: tuple[object, ...]) -> object:
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        try:
            conn.execute(INSERT, values)
        except sqlite3.Error as exc:  # e.g. a NaN `ts`: NULL in a NOT NULL column
            return type(exc)
        return conn.execute(f"SELECT {', '.join(f'typeof({c}), {c}' for c in COLUMNS)} FROM requests").fetchall()
    finally:
        conn.close()


def _record(request_id: str) -> Record:
    return Record(
        request_id=request_id, ts=1.0, caller=None, key_id=None, profile=None, route="openai", upstream=None,
        model_requested=None, model_served=None, model_priced=None, status=None, outcome=None, stream=True,
        input_tokens=None, output_tokens=None, cached_input_tokens=None, cache_write_tokens=None,
        reasoning_tokens=None, cost_usd=None, latency_ms=0.5, ttfb_ms=None, cache_hit=False, estimated=True,
        session_id=None,
    )  # fmt: skip


class _StopsOnce:
    """A wake event whose first wait ends the writer thread the way nothing in its loop can catch."""

    def __init__(self, event):
        self.event, self.fired = event, False

    def wait(self, timeout):
        if not self.fired:
            self.fired = True
            raise SystemExit
        return self.event.wait(timeout)

    def __getattr__(self, name):
        return getattr(self.event, name)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's end, on purpose
async def test_a_writer_that_ended_is_started_again_by_the_next_record(tmp_path):
    path = tmp_path / "ledger.db"
    metrics = Metrics()
    ledger = Ledger.open(str(path), 60, metrics)
    first, wake = ledger._thread, ledger._wake
    ledger._wake = _StopsOnce(wake)
    wake.set()  # the writer goes round once more and meets the failing wait
    await asyncio.to_thread(first.join, 10)
    assert not ledger.writer_alive
    ledger._started_at -= RESTART_PAUSE_S  # not within the restart pause
    ledger.record(_record("r-2"))
    assert ledger._thread is not first and ledger.writer_alive
    assert await ledger.flush() is True
    await ledger.close()
    assert metrics.registry.get_sample_value("agent_proxy_ledger_errors_total", {"op": "writer"}) == 1
    conn = connect(path, readonly=True)
    try:
        assert conn.execute("SELECT request_id FROM requests").fetchall() == [("r-2",)]
    finally:
        conn.close()

"""The memory store's plans written out (proxy/state/memory_plans.py) against its generic loops, the reference:
the same figures and results, and the same state afterwards (values, expiries, the keys' order, the leases'
bounds), whatever came before: live and expired entries, held leases, refusals, a store about to sweep."""

from __future__ import annotations

import math
import struct

from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.state import MemoryStore
from proxy.state.base import QUOTA, RATE, SLOT, Plan
from proxy.state.memory_plans import _Leases, _rounded, admission, settlement

T0 = 1_765_000_000.123456
LEASES = st.sampled_from(["l1", "l2", "l3"])


def _rows(kind: str, keys: list[str]):
    key = st.sampled_from([f"{kind}:{k}" for k in keys])  # a key holds one kind of value
    if kind == RATE:
        periods = st.sampled_from([1.0, 60.0, 86400.0])
        return st.tuples(st.just(RATE), key, st.integers(1, 10**9), periods, st.just(False))
    if kind == SLOT:
        return st.tuples(st.just(SLOT), key, st.integers(1, 3), st.floats(0.5, 600), st.just(False))
    return st.tuples(st.just(QUOTA), key, st.floats(0, 100), st.floats(T0 - 50, T0 + 1e5), st.booleans())


ROW = st.one_of(*(_rows(kind, ["a", "b", "c"]) for kind in (RATE, SLOT, QUOTA)))


def _amount(row, settling: bool):
    if row[0] == SLOT:
        return LEASES
    if row[0] == RATE:
        return st.floats(-1e7, 1e7) if settling else st.floats(0, 1e7) | st.integers(0, 10**6)
    return st.floats(-50, 50) if settling else st.floats(0, 50)


@st.composite
def _call(draw, settling: bool):
    rows = draw(st.lists(ROW, min_size=1, max_size=6))
    return rows, [draw(_amount(row, settling)) for row in rows]


# What happened before: admissions and settlements, each some time after the one before.
HISTORY = st.lists(
    st.tuples(st.booleans(), st.booleans().flatmap(_call), st.sampled_from([0.0, 0.001, 0.5, 7.0, 90.0, 1e5])),
    max_size=12,
)


def _twins(history, max_keys: int) -> tuple[MemoryStore, MemoryStore, float]:
    """Two stores brought to the same state by the generic loops."""
    stores = MemoryStore(max_keys), MemoryStore(max_keys)
    now = T0
    for settling, (rows, amounts), later in history:
        now += later
        for store in stores:
            if settling:
                store._apply(zip(Plan(rows).rows, amounts, strict=True), now)
            else:
                store._admit_rows(Plan(rows), amounts, now)
    return stores[0], stores[1], now


def _state(store: MemoryStore) -> str:
    """Everything kept, in order; `repr` tells 0.0 from -0.0 and True from 1.0."""
    return repr(
        [
            (key, (sorted(value.items()), value.soonest, value.latest) if isinstance(value, _Leases) else value, at)
            for key, (value, at) in store._data.items()
        ]
    )


@settings(max_examples=800)
@given(
    HISTORY,
    st.booleans().flatmap(lambda settling: st.tuples(st.just(settling), _call(settling))),
    st.sampled_from([0.0, 0.3, 30.0]),
    st.sampled_from([4, 8, 200_000]),
)
def test_an_admission_or_a_settlement_written_out_is_the_generic_loops(history, call, later, max_keys):
    written, reference, now = _twins(history, max_keys)
    settling, (rows, amounts) = call
    now += later
    if settling:
        answer = written.settle_now(Plan(rows), amounts, now)
        expected = reference._apply(zip(rows, amounts, strict=True), now)
    else:
        answer = written.admit_now(Plan(rows), amounts, now)
        expected = reference._admit_rows(Plan(rows), amounts, now)
    assert repr(answer) == repr(expected)
    assert _state(written) == _state(reference)


def test_the_usual_admission_and_settlement_are_written_out_and_answer_without_the_generic_loop():
    """A caller's rates of requests and tokens, its concurrency and its daily budget: no refusal, room to spare."""
    rows = [
        (RATE, "c:rpm", 600, 60.0, False),
        (RATE, "c:tpm", 100_000, 60.0, False),
        (SLOT, "c:conc", 2, 120.0, False),
        (QUOTA, "c:usd:d", 5.0, T0 + 3600, False),
    ]
    store = MemoryStore()
    admit, settle = admission(Plan(rows)), settlement(Plan([rows[2], rows[1], rows[3]]))
    assert admit and settle
    for lease in ("l1", "l2"):
        assert admit(store._data, (1, 700, lease, 0.25), T0, store._max_keys) is not None
    assert admit(store._data, (1, 700, "l3", 0.25), T0, store._max_keys) is None  # the third in flight: refused
    assert settle(store._data, ("l1", -200, -0.05), T0 + 1, store._max_keys) == [0.0, 100_000.0, 0.45]
    assert admit(store._data, (1, 700, "l3", 0.25), T0 + 1, store._max_keys) is not None
    # A key checked twice, a rate that allows nothing, no rows: the generic loop.
    assert admission(Plan([rows[0], rows[0]])) is False
    assert admission(Plan([(RATE, "z", 0, 60.0, False)])) is False
    assert admission(Plan([])) is False and settlement(Plan([])) is False


def _written_rounding():
    namespace: dict = {}
    exec("def rounded(x):\n" + "".join(f"    {line}\n" for line in _rounded("r", "x")) + "    return r\n", namespace)
    return namespace["rounded"]


ROUNDED = _written_rounding()
_HALF = st.integers(0, 2**51).map(lambda k: (k + 0.5) / 1e6)  # a half of a microsecond, a hair either side in binary
_TIE = st.integers(0, 2**37).map(lambda j: (2 * j + 1) / 128)  # exactly a half of a microsecond: odd/128 only


@settings(max_examples=3000)
@given(
    st.floats()
    | st.floats(1.7e9, 2.3e9)
    | st.floats(0, 1e7)
    | _HALF
    | _TIE
    | _HALF.flatmap(lambda x: st.sampled_from([math.nextafter(x, 0), math.nextafter(x, math.inf)]))
)
@example(0.0078125)  # 7812.5 microseconds exactly: to the even 7812
@example(0.0234375)  # 23437.5: to 23438
@example(0.0000025)  # a half in decimal, just under in binary
@example(0.0000035)
@example(2.0**51 / 1e6)
@example(-0.0)
@example(5e-324)
def test_the_written_out_rounding_is_round_bit_for_bit(x):
    """Where `round_to` would call `round` (a scaled value within 1/8 of a half), the written-out code finds the
    side of the half exactly: the same double as `round(x, 6)`, ties to even included."""
    assert struct.pack("<d", ROUNDED(x)) == struct.pack("<d", round(x, 6))

"""`round_to` is `round` bit for bit: the ledger's figures must not change."""

from __future__ import annotations

import math
import struct

from hypothesis import example, given
from hypothesis import strategies as st

from proxy.rounding import round_to


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


@given(st.floats(allow_nan=False), st.integers(min_value=0, max_value=6))
@example(0.0005, 3)  # a half in decimal, not in binary
@example(2.675, 2)
@example(-0.0, 3)
@example(1e-320, 3)
@example(2.0**51 / 1000, 3)
@example(1.5, 0)
@example(2.5, 0)
def test_same_double_as_round(x: float, digits: int) -> None:
    assert bits(round_to(x, digits)) == bits(round(x, digits))


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=6))
def test_decimal_halves(n: int, digits: int) -> None:
    """Values written as k + 1/2 units of the last digit: the cases where a binary shortcut would slip."""
    x = (n + 0.5) / 10.0 ** (digits + 0)  # may be a hair either side of the half in binary
    assert bits(round_to(x, digits)) == bits(round(x, digits))


@given(st.floats(min_value=0, max_value=1e7), st.integers(min_value=0, max_value=6))
def test_latency_range(ms: float, digits: int) -> None:
    assert bits(round_to(ms, digits)) == bits(round(ms, digits))


def test_nan_and_inf_pass_through() -> None:
    assert math.isnan(round_to(math.nan, 3))
    assert round_to(math.inf, 3) == math.inf

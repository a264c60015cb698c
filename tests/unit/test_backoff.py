"""Backoff with full jitter and retry-after parsing, with a seeded RNG and an injected clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.forward.backoff import MAX_RETRY_AFTER_S, backoff_delay, parse_retry_after, retry_delay


class Fixed(random.Random):
    """An RNG whose uniform() returns the top of the range, to see the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_ceiling_doubles_then_caps():
    ceilings = [backoff_delay(n, 0.25, 2.0, Fixed()) for n in range(1, 7)]
    assert ceilings == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert backoff_delay(10_000, 0.25, 2.0, Fixed()) == 2.0  # no overflow on absurd attempt numbers


@given(attempt=st.integers(1, 50), base=st.floats(0.001, 60), cap=st.floats(0.001, 300), seed=st.integers())
def test_full_jitter_stays_within_zero_and_the_ceiling(attempt, base, cap, seed):
    delay = backoff_delay(attempt, base, cap, random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2 ** (attempt - 1)) + 1e-9


def test_jitter_spreads_over_the_whole_range():
    rng = random.Random(7)
    delays = [backoff_delay(3, 1.0, 100, rng) for _ in range(2000)]
    assert min(delays) < 0.1 and max(delays) > 3.9
    assert 1.8 < sum(delays) / len(delays) < 2.2


def test_retry_after_is_a_floor():
    assert retry_delay(1, 0.25, 8, 3.0, Fixed()) == 3.0
    assert retry_delay(6, 0.25, 8, 3.0, Fixed()) == 8.0
    assert retry_delay(1, 0.25, 8, None, Fixed()) == 0.25


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "99999999999"}, MAX_RETRY_AFTER_S),
        ({}, None),
    ],
)
def test_retry_after_seconds(headers, expected):
    assert parse_retry_after(headers) == expected


def test_retry_after_http_date():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 1, 2, 3, 4, 35, tzinfo=UTC), usegmt=True)
    assert parse_retry_after({"retry-after": later}, now=lambda: now) == 30.0
    earlier = format_datetime(datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after({"retry-after": earlier}, now=lambda: now) == 0.0
    assert parse_retry_after({"retry-after": "Fri, 02 Jan 2026 03:04:15 -0000"}, now=lambda: now) == 10.0

"""`reported_counts`, the adapters' positional way to `reported`, gives the same Usage for any raw values."""

from __future__ import annotations

import enum

from hypothesis import given
from hypothesis import strategies as st

from proxy.protocols.base import COUNTS, MAX_REPORTED_TOKENS, reported, reported_counts


class _Count(enum.IntEnum):  # an int subclass: believed by `reported`, so by `reported_counts` too
    SOME = 7


_RAW = st.one_of(
    st.none(),
    st.integers(-5, MAX_REPORTED_TOKENS + 5),
    st.sampled_from([0, MAX_REPORTED_TOKENS, MAX_REPORTED_TOKENS + 1, -1, 2**64, True, False, _Count.SOME]),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
)


@given(values=st.tuples(_RAW, _RAW, _RAW, _RAW, _RAW))
def test_reported_counts_is_reported(values):
    assert reported_counts(*values) == reported(**dict(zip(COUNTS, values, strict=True)))


def test_believable_counts_are_kept_and_the_others_named():
    assert reported_counts(1, None, 0, MAX_REPORTED_TOKENS, None).counts() == {
        "input_tokens": 1, "cached_input_tokens": 0, "cache_write_tokens": MAX_REPORTED_TOKENS,
    }  # fmt: skip
    usage = reported_counts(True, -1, 3, 2.0, "4")
    assert usage.counts() == {"cached_input_tokens": 3}
    assert usage.rejected == ("input_tokens", "output_tokens", "cache_write_tokens", "reasoning_tokens")

"""`Usage.update` and `Usage.counts` name every count kind one by one (for speed): they must agree with COUNTS."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from proxy.protocols.base import COUNTS, Usage

_COUNT = st.none() | st.integers(min_value=0, max_value=10**6)
_USAGE = st.builds(
    Usage,
    **{name: _COUNT for name in COUNTS},
    rejected=st.lists(st.sampled_from(COUNTS), unique=True).map(tuple),
)


def _update_by_name(usage: Usage, other: Usage) -> None:
    for name in COUNTS:
        if (value := getattr(other, name)) is not None:
            setattr(usage, name, value)
    for name in other.rejected:
        setattr(usage, name, None)
    if other.rejected:
        usage.rejected = (*usage.rejected, *(n for n in other.rejected if n not in usage.rejected))


@given(_USAGE, _USAGE)
def test_update_and_counts_agree_with_every_kind_by_name(first, later):
    assert set(COUNTS) == {f.name for f in dataclasses.fields(Usage)} - {"rejected"}
    expected = dataclasses.replace(first)
    _update_by_name(expected, later)
    first.update(later)
    assert first == expected
    assert list(first.counts().items()) == [(n, getattr(first, n)) for n in COUNTS if getattr(first, n) is not None]

"""`round(x, digits)`, exactly, without its decimal conversion.

The ledger keeps milliseconds to 3 digits; the memory store keeps numbers to the microsecond, as
the Redis store does ('%.6f'). Several roundings run per request.

`round(x, n)` goes through dtoa and back (about 2.7K instructions); scaling by 10**n and
rounding to an integer in binary gives the same double whenever the scaled value's own
rounding error cannot carry it across a half, which is all but a sliver of inputs. The
rest, and negatives, zero and huge values, take `round` itself.
"""

from __future__ import annotations

_SCALES = tuple(10.0**n for n in range(7))  # exact doubles, so `whole / scale` is correctly rounded
_FAST_BELOW = 2.0**51  # scaled values below this carry at most 1/8 of rounding error
_TO_INTEGER = 2.0**52  # added to and taken from 0 <= y < 2**52: y rounded to an integer, half to even
_MARGIN = 0.375  # 0.5 less that error bound: the exact x * 10**n rounds to the same integer


def round_to(x: float, digits: int) -> float:
    """`round(x, digits)` for 0 <= digits <= 6, bit for bit."""
    scale = _SCALES[digits]
    y = x * scale
    if 0.0 < y < _FAST_BELOW:
        whole = (y + _TO_INTEGER) - _TO_INTEGER
        if -_MARGIN < y - whole < _MARGIN:
            return whole / scale
    return round(x, digits)

"""How long to wait before trying again: capped exponential backoff with full jitter, or the upstream's word.

Full jitter (a uniform draw between 0 and the capped exponential) spreads the retries of
many callers hit by the same outage instead of sending them back in waves (AWS
Architecture Blog, "Exponential Backoff And Jitter"). An upstream's `retry-after` (or
OpenAI's `retry-after-ms`) is a floor: the proxy never comes back sooner than asked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_S = 24 * 3600.0  # anything longer is nonsense; the deadline cuts it far sooner anyway


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """The wait after failed attempt number `attempt` (1 for the first): uniform in [0, min(max, base * 2^(n-1))]."""
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 62))
    return (rng or random).uniform(0.0, ceiling)


def retry_delay(
    attempt: int, base_s: float, max_s: float, retry_after_s: float | None, rng: random.Random | None = None
) -> float:
    """The backoff, raised to the upstream's retry-after when it asked for longer."""
    delay = backoff_delay(attempt, base_s, max_s, rng)
    return delay if retry_after_s is None else max(delay, retry_after_s)


def parse_retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date; None if absent or bad."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _number(millis)
        if seconds is not None:
            return min(seconds / 1000.0, MAX_RETRY_AFTER_S)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is None:
        try:
            when = parsedate_to_datetime(raw.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses as naive
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, when.timestamp() - now())
    return min(seconds, MAX_RETRY_AFTER_S)


def _number(raw: str) -> float | None:
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if value != value or value < 0 or value == float("inf"):  # NaN, negative, infinite
        return None
    return value

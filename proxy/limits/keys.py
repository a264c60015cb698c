"""Store keys and budget periods.

Keys are `<state.key_prefix><kind>:<names>`; a name the policy does not control (a
caller from a JWT, a run id) is used as-is only when short and plain, otherwise as a
hash, so a key never carries arbitrary input and stays bounded.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
from datetime import UTC, datetime

_PLAIN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def digest(text: str, size: int = 20) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size // 2).hexdigest()


def part(name: str) -> str:
    """A key component for a name: itself when plain, else `~` and a hash of it."""
    return name if _PLAIN.fullmatch(name) else "~" + digest(name)


_day: tuple[float, float, str] = (0.0, 0.0, "")
_month: tuple[float, float, str] = (0.0, 0.0, "")


def day_period(now: float) -> tuple[str, float]:
    """The UTC day containing `now`: its label and the epoch second it ends (remembered until then)."""
    global _day
    start, end, label = _day
    if not start <= now < end:
        day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = day.timestamp()
        _day = start, end, label = start, start + 86_400, day.strftime("%Y%m%d")
    return label, end


def month_period(now: float) -> tuple[str, float]:
    global _month
    start, end, label = _month
    if not start <= now < end:
        first = datetime.fromtimestamp(now, UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = (first.year + 1, 1) if first.month == 12 else (first.year, first.month + 1)
        after = first.replace(year=year, month=month)
        _month = start, end, label = first.timestamp(), after.timestamp(), first.strftime("%Y%m")
    return label, end


_LEASE_PREFIX = secrets.token_hex(6)  # tells this process's leases from other replicas'
_leases = itertools.count()


def new_lease() -> str:
    return f"{_LEASE_PREFIX}{next(_leases):x}"

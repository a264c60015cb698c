"""Mutable knobs and request log shared between a test thread and the mock server."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson

FAULTS: frozenset[str] = frozenset(
    {"status_500", "status_429", "status_503", "slow_first_byte", "hang", "reset", "cut_stream"}
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the mock saw it, so tests can assert what a proxy forwarded."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """Parse the body; raises if it was not JSON."""
        return orjson.loads(self.body)


@dataclass
class MockBehaviour:
    """Held by the app and read per request, so tests can flip faults between calls.

    Plain attribute sets from another thread are safe enough under the GIL; the only
    read-modify-write (consuming ``fault_times``) is guarded by a lock.
    """

    fault: str | None = None
    fault_times: int | None = None
    delay_s: float = 0.0
    retry_after: str | None = None
    omit_usage: bool = False
    reply_words: int = 12
    requests: list[RecordedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_fault(self.fault)

    def count(self, path: str) -> int:
        """How many recorded requests hit exactly ``path``."""
        return sum(1 for r in list(self.requests) if r.path == path)

    def take_fault(self) -> str | None:
        """Return the configured fault for one request, consuming one of ``fault_times``."""
        with self._lock:
            fault = self.fault
            if fault is None:
                return None
            _check_fault(fault)
            if self.fault_times is not None:
                if self.fault_times <= 0:
                    self.fault, self.fault_times = None, None
                    return None
                self.fault_times -= 1
                if self.fault_times == 0:
                    self.fault, self.fault_times = None, None
            return fault

    def next_id(self) -> int:
        """Monotonic per app, so ids are unique yet reproducible across runs."""
        with self._lock:
            return next(self._ids)

    def reset(self) -> None:
        """Back to a healthy server; the request list is cleared in place so references stay valid."""
        with self._lock:
            self.fault, self.fault_times = None, None
            self.delay_s, self.retry_after = 0.0, None
            self.omit_usage, self.reply_words = False, 12
            self.requests.clear()


def _check_fault(fault: str | None) -> None:
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown mock fault {fault!r}; expected one of {sorted(FAULTS)}")

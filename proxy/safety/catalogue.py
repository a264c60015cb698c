"""The detectors a policy names: the built-in ones by name and group, and the policy's own patterns."""

from __future__ import annotations

import re
from collections.abc import Iterable

from proxy.safety.detector import Detector, make
from proxy.safety.pii_detectors import PII_DETECTORS
from proxy.safety.secret_detectors import API_KEYS, PASSWORDS, SECRET_DETECTORS

BUILTIN: tuple[Detector, ...] = (*PII_DETECTORS, *SECRET_DETECTORS)

BY_NAME: dict[str, Detector] = {d.name: d for d in BUILTIN}

GROUPS: dict[str, tuple[str, ...]] = {
    "api_key": API_KEYS,
    "ip_address": ("ipv4", "ipv6"),
    "secrets": (*API_KEYS, "jwt", "private_key", *PASSWORDS),
    "password": PASSWORDS,  # assignments, URL credentials and command-line passwords: one policy name
    "pii": ("email", "phone", "ssn", "credit_card", "iban"),
    "all": tuple(BY_NAME),
}
KNOWN_NAMES = frozenset(BY_NAME) | frozenset(GROUPS)

MAX_CUSTOM_REACH = 512


def expand(names: Iterable[str]) -> list[str]:
    """Detector names with groups expanded, in first-mention order, without repeats."""
    out: list[str] = []
    for name in names:
        for member in GROUPS.get(name, (name,)):
            if member not in out:
                out.append(member)
    return out


def custom_detector(name: str, pattern: str, label: str | None = None, ignore_case: bool = False) -> Detector:
    """A policy's own regex; its reach must be bounded (checked when the policy loads)."""
    flags = re.IGNORECASE if ignore_case else 0
    detector = make(name, f"[{label or name.upper()}]", pattern, flags)
    if detector.ahead > MAX_CUSTOM_REACH:
        raise ValueError(f"the pattern can match up to {detector.ahead} characters; the limit is {MAX_CUSTOM_REACH}")
    return detector

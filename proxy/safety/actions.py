"""What happens to a detected value: mask, hash, block on the way back; mask or pseudonymise on the way out.

Every replacement is counted by detector; the counts (never the values) go to the
metrics and the log line.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

from proxy.safety.detector import Detector, make

OutputAction = Literal["mask", "hash", "block"]
InputAction = Literal["mask", "pseudonymise"]
HASH_HEX = 12


class Blocked(Exception):
    """A detector whose action is `block` matched; carries its name only."""

    def __init__(self, detector: str):
        super().__init__(detector)
        self.detector = detector


class OutputActions:
    """The replacement for each value in what the caller receives, per the policy's action for its detector."""

    __slots__ = ("_actions", "_key", "_tenant", "counts")

    def __init__(self, actions: Mapping[str, OutputAction], hash_key: bytes | None, tenant: str):
        self._actions = actions
        self._key = hash_key
        self._tenant = tenant.encode()
        self.counts: dict[str, int] = {}

    def __call__(self, detector: Detector, value: str) -> str:
        self.counts[detector.name] = self.counts.get(detector.name, 0) + 1
        action = self._actions.get(detector.name, "mask")
        if action == "block":
            raise Blocked(detector.name)
        if action == "hash" and self._key is not None:
            message = b"\x00".join((self._tenant, detector.name.encode(), value.encode("utf-8", "surrogatepass")))
            digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()[:HASH_HEX]
            return f"[{detector.tag}_{digest}]"
        return detector.label


class Pseudonymiser:
    """Replaces each value of a prompt with a placeholder, the same one for the same value, and remembers it."""

    __slots__ = ("_by_value", "_mode", "_next", "counts", "originals")

    def __init__(self, mode: InputAction):
        self._mode = mode
        self._by_value: dict[tuple[str, str], str] = {}
        self._next: dict[str, int] = {}
        self.originals: dict[str, str] = {}  # placeholder -> value, for the response
        self.counts: dict[str, int] = {}

    def __call__(self, detector: Detector, value: str) -> str:
        self.counts[detector.name] = self.counts.get(detector.name, 0) + 1
        if self._mode == "mask":
            return detector.label
        key = (detector.tag, value)
        placeholder = self._by_value.get(key)
        if placeholder is None:
            number = self._next[detector.tag] = self._next.get(detector.tag, 0) + 1
            placeholder = self._by_value[key] = f"[{detector.tag}_{number}]"
            self.originals[placeholder] = value
        return placeholder

    def restore(self, detector: Detector, placeholder: str) -> str:
        """For the placeholder detector: the original value, or the text unchanged if it is not one of ours."""
        return self.originals.get(placeholder, placeholder)


PLACEHOLDER = make("placeholder", "[PLACEHOLDER]", r"\[[A-Z][A-Z0-9_]{0,40}_\d{1,6}\]", run=r"[A-Z0-9_\[\]]")
"""Finds placeholders such as [EMAIL_1] in a response, to put the original values back."""

"""Redacting a text that arrives in pieces exactly as if it had arrived whole.

A `StreamRedactor` keeps the text it has not released yet. On each piece it commits
every hit that starts before the scanner's hold point (replacing it), releases the text
up to that point, and keeps the rest: a tail no longer than the longest match that could
still start in it, and in ordinary prose only the last word or so, because the
detectors' `run` and `start` rules settle every start followed by a character no match
could contain. A few characters already released are kept too, for lookbehinds.
`flush()` at the end of the text releases everything. The whole text and any split of
it into pieces give the same output, which is the property the tests check.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence

from proxy.safety.detector import Detector
from proxy.safety.normalise import normalise
from proxy.safety.scanner import Scanner

Replace = Callable[[Detector, str], str]
"""The replacement for one detected value; may raise (the block action)."""


class StreamRedactor:
    __slots__ = ("_base", "_buf", "_quiet", "_replace", "_scanner")

    def __init__(self, scanner: Scanner, replace: Replace):
        self._scanner = scanner
        self._replace = replace
        self._buf = ""  # a few released characters (context), then the unreleased text
        self._base = 0  # where the unreleased text starts in `_buf`
        self._quiet = 0  # in `_buf`: no start open before it for the detectors without start hints (Scanner.hold)

    def feed(self, text: str) -> str:
        if not text:
            return ""
        self._buf += text
        return self._drain(final=False)

    def flush(self) -> str:
        return self._drain(final=True)

    def close(self, text: str) -> str:
        """`text` is the last piece: the same as feed(text) + flush(), without working out what to hold."""
        self._buf += text
        return self._drain(final=True)

    @property
    def pending(self) -> int:
        """Characters held back now."""
        return len(self._buf) - self._base

    def _drain(self, final: bool) -> str:
        buf, pos = self._buf, self._base
        scanner = self._scanner
        if scanner.normalises and not buf.isascii():  # ASCII is its own normal form
            text, where = normalise(buf)
            if where is not None:
                return self._drain_mapped(final, text, where)
        hold, quiet = (len(buf), len(buf)) if final else scanner.hold(buf, pos, self._quiet)
        released = ""
        if hold > pos:
            cache = scanner.new_cache(buf, pos)
            if cache is None:  # no anchor, so no hit: the usual event
                released, pos = buf[pos:hold], hold
            else:
                out: list[str] = []
                while (hit := scanner.next_hit(buf, pos, cache)) is not None and hit.start < hold:
                    out.append(buf[pos : hit.value_start])
                    out.append(self._replace(hit.detector, buf[hit.value_start : hit.value_end]))
                    out.append(buf[hit.value_end : hit.end])
                    pos = hit.end
                if hold > pos:
                    out.append(buf[pos:hold])
                    pos = hold
                released = "".join(out)
        keep = pos - scanner.behind
        if keep < 0:
            keep = 0
        self._buf = buf[keep:]
        self._base = pos - keep
        self._quiet = quiet - keep
        return released

    def _drain_mapped(self, final: bool, text: str, where: list[int]) -> str:
        """The same on the normal form `text` of the buffer; `where` maps its characters back to the buffer's,
        and the original characters of each hit are what gets replaced."""
        buf, pos = self._buf, self._base
        scanner = self._scanner
        npos = bisect_left(where, pos)
        nhold = len(text) if final else scanner.hold_from(text, npos)
        hold = len(buf) if nhold >= len(text) else where[nhold]
        out: list[str] = []
        if hold > pos:
            cache = scanner.new_cache(text, npos)
            while cache is not None and (hit := scanner.next_hit(text, npos, cache)) is not None and hit.start < nhold:
                value_start, value_end = where[hit.value_start], where[hit.value_end - 1] + 1
                end = where[hit.end - 1] + 1
                out.append(buf[pos:value_start])
                out.append(self._replace(hit.detector, buf[value_start:value_end]))
                out.append(buf[value_end:end])
                pos, npos = end, hit.end
            if hold > pos:
                out.append(buf[pos:hold])
                pos = hold
        back = bisect_left(where, pos) - scanner.behind  # keep `behind` characters of the normal form
        keep = 0 if back <= 0 else min(where[back], pos - scanner.behind)
        self._buf = buf[keep:]
        self._base = pos - keep
        self._quiet = 0  # positions in the normal form are not the buffer's: search from `base` next time
        return "".join(out)


def redact_whole(scanner: Scanner, replace: Replace, text: str) -> str:
    """The same procedure on a text known to be complete."""
    return StreamRedactor(scanner, replace).close(text)


class TextPipeline:
    """Redactors in series, each fed what the one before released (redact, then restore placeholders)."""

    __slots__ = ("_steps",)

    def __init__(self, steps: Sequence[StreamRedactor]):
        self._steps = tuple(steps)

    def feed(self, text: str) -> str:
        for step in self._steps:
            text = step.feed(text)
        return text

    @property
    def feeder(self) -> Callable[[str], str]:
        """`feed`, or the one redactor's own when there is one (the usual pipeline: no placeholders to put back),
        which a stream calls once per event."""
        return self._steps[0].feed if len(self._steps) == 1 else self.feed

    def flush(self) -> str:
        return self.close("")

    @property
    def pending(self) -> int:
        """Characters of the text fed that are not released yet: exact with one step, a fair guess with two
        (a placeholder the second step holds may stand for a different number of characters fed)."""
        return sum(step.pending for step in self._steps)

    def close(self, text: str) -> str:
        for step in self._steps:
            text = step.close(text)
        return text

    def whole(self, text: str) -> str:
        """A fresh pipeline's output for a complete text."""
        return self.close(text)

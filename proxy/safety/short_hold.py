"""Where a short unreleased text could still start a match, found in a few searches for all detectors at once.

A stream's unreleased text is usually a word or two. Asking each detector in turn where it
could start (`Scanner._hold_each`) costs a dozen Python-level steps per detector; here the
detectors' `start` and `run` rules are one union of lookaheads, searched once, matching
(empty) at the first position where any of them could start: its `start` matches there and
its `run` reaches the end of the text. That is the same position `_hold_each` finds when
the text after `base` is shorter than every detector's reach (so no start is settled by
distance alone), which is the only case this is used for; a property test compares the two.

Detectors whose run has no whitespace are searched only from the start of the text's last
word (the run of non-space characters that ends it): most of them, and after a word and a
space nothing is left to try. Detectors with start hints (`password`, `aws_secret_key`) keep
their own search, which looks for a full head only where a hint is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from proxy.safety.detector import Detector
from proxy.safety.regexbounds import first_chars

_SPACES = tuple(chr(code) for code in range(0x3001) if re.match(r"\s", chr(code)))  # every \s is below U+3001
_WORD = re.compile(r"\S*")


def _part(pattern: re.Pattern[str], suffix: str = "") -> str | None:
    """`pattern` (then `suffix`) as a lookahead in a union, or None if it cannot be one (groups, flags)."""
    source = pattern.pattern
    if pattern.groups or pattern.flags & ~(re.UNICODE | re.IGNORECASE) or re.match(r"\(\?[aiLmsux]+\)", source):
        return None
    return f"(?=(?i:{source}){suffix})" if pattern.flags & re.IGNORECASE else f"(?=(?:{source}){suffix})"


def _first_chars(detectors: Sequence[Detector]) -> re.Pattern[str] | None:
    """Where the union can match before the end of the text: at a character a `start` (or, without one, a run)
    can begin with; None if some detector's is not known."""
    classes = []
    for detector in detectors:
        rule = detector.start if detector.start is not None else detector.run
        found = first_chars(rule) if rule is not None else None
        if found is None:
            return None
        classes.append(found.pattern[1:-1])
    return re.compile(f"[{''.join(classes)}]")


class _Union:
    """The first position at or after `pos` where one of `detectors` could still start a match."""

    __slots__ = ("_first", "_search", "_settled")

    def __init__(self, search: re.Pattern[str], settled: tuple[Detector, ...], first: re.Pattern[str] | None):
        self._search = search.search
        self._settled = settled
        # The union's lookaheads are tried at every position; one class search skips to where one can match.
        self._first = first.search if first is not None else None

    @classmethod
    def build(cls, detectors: Sequence[Detector]) -> _Union | None:
        """Those without a `settled` rule come first and mark group 1: a match there is an open start at once;
        a match of the others is open unless the detector's match found there has settled."""
        open_parts, settled_parts = [], []
        for detector in detectors:
            parts = [
                _part(detector.start) if detector.start is not None else "",
                _part(detector.run, r"\Z") if detector.run is not None else "",
            ]
            if None in parts:
                return None
            (open_parts if detector.settled is None else settled_parts).append("".join(parts))  # type: ignore[arg-type]
        source = f"(?:{'|'.join(open_parts) if open_parts else '(?!)'})()"
        if settled_parts:
            source += f"|{'|'.join(settled_parts)}"
        return cls(re.compile(source), tuple(d for d in detectors if d.settled is not None), _first_chars(detectors))

    def first(self, text: str, pos: int, length: int, limit: int) -> int:
        """`limit`: a start at or past it is of no use to the caller (it has one there already)."""
        if self._first is not None:
            if (candidate := self._first(text, pos, limit)) is None:
                return length  # nothing before `limit` (the end of the text is no open start)
            pos = candidate.start()
        while (found := self._search(text, pos)) is not None:
            at = found.start()
            if at >= length or found.start(1) >= 0:
                return at
            for detector in self._settled:
                start, run = detector.start, detector.run
                if (start is None or start.match(text, at)) and (run is None or run.match(text, at).end() == length):  # type: ignore[union-attr]
                    match = detector.pattern.match(text, at)
                    if match is None or not detector.settled(match, length):  # type: ignore[misc]
                        return at
            pos = at + 1
        return length


class ShortHold:
    """The earliest open start at or after `base` for the detectors without start hints, in a text whose part
    after `base` is shorter than `reach` (every detector's reach)."""

    __slots__ = ("_rest", "_word", "reach")

    def __init__(self, word: _Union | None, rest: _Union | None, reach: int):
        self._word = word
        self._rest = rest
        self.reach = reach

    @classmethod
    def build(cls, detectors: Sequence[Detector]) -> ShortHold | None:
        """None when a detector's rules cannot go into a union; the scanner then asks each detector."""
        word, rest = [], []
        for detector in detectors:
            if detector.start_hints:
                if detector.run is not None:  # the scanner searches these from `base`, not from where a run starts
                    return None
                continue
            run = detector.run
            (word if run is not None and not any(run.fullmatch(c) for c in _SPACES) else rest).append(detector)
        unions = [_Union.build(group) if group else None for group in (word, rest)]
        if any(u is None for u, group in zip(unions, (word, rest), strict=True) if group):
            return None
        return cls(unions[0], unions[1], min((d.ahead for d in detectors), default=0))

    def first(self, text: str, base: int, length: int) -> int:
        """The last word first: in prose its start is open (a word may go on), and nothing after it then counts."""
        hold = length
        if self._word is not None and base < length and not text[-1].isspace():  # `isspace` is the regex's `\s`
            word = length - _WORD.match(text[base:][::-1]).end()  # type: ignore[union-attr]
            if word < length:
                hold = self._word.first(text, word, length, length)
        if self._rest is not None and base < hold:
            found = self._rest.first(text, base, length, hold)
            if found < hold:
                hold = found
        return hold

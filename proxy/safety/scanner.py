"""Finding hits, and knowing which parts of a growing text are already decided.

Hits are taken leftmost first; at the same start the longest wins, then the detector
listed first. A detector's candidate that its check rejects is skipped and the search
goes on one character later, so the outcome depends only on the text itself.

`hold_from` is what makes streaming exact: it returns the earliest position where a
match could still start, or change, if more text arrived. Before it, every start is
settled, because the regex cannot read past what is known: the text is longer than the
detector's reach from there, or there is a character that no match of it contains
(`run`), or no head it could start with (`start`), or the match found there has ended
on a character the text already has (`settled`). A settled start stays settled as the text
grows (a `start` matches every prefix of a head that is cut by the end of the text), which
is what lets `hold` search a stream's next event on from where the last search left off;
short texts, the usual event, are decided by one search for all detectors (short_hold.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.safety.detector import Detector
from proxy.safety.regexbounds import ClassRun, first_char_search, split_end_anchored
from proxy.safety.short_hold import ShortHold

_UNKNOWN: Any = object()
_StartParts = tuple[re.Pattern[str] | None, re.Pattern[str] | None, int, tuple[ClassRun, ...], re.Pattern[str] | None]
ANCHORED_FROM = 512
"""Texts at least this long are searched by anchor; both ways find the same hits (tests check it)."""


@dataclass(frozen=True, slots=True)
class Hit:
    detector: Detector
    start: int
    end: int
    value_start: int  # the part that is replaced: the whole hit, or an assignment's value
    value_end: int


def _any_anchor(detectors: Sequence[Detector]) -> re.Pattern[str] | None:
    """One pattern matching wherever any detector's anchor does, if every detector has one."""
    anchors = [d.anchor for d in detectors]
    if not anchors or any(a is None or a.flags != re.UNICODE for a in anchors):
        return None
    either = "|".join(dict.fromkeys(f"(?:{a.pattern})" for a in anchors if a is not None))
    return first_char_search(either) or re.compile(either)


def _start_parts(detector: Detector) -> _StartParts | None:
    """A detector's `start` as searched: whole, or, with hints, split into the full heads (skipped where no hint
    is) and the partial heads at the very end of the text."""
    if detector.start is None:
        return None
    if not detector.start_hints:
        return detector.start, None, 0, (), None
    # The hints are looked for with the heads' own case-insensitive matching, so no head can match where none is.
    hints = re.compile("|".join(re.escape(hint) for hint in detector.start_hints), re.IGNORECASE)
    return *split_end_anchored(detector.start), hints


def _value_span(match: re.Match[str], group: str | tuple[str, ...]) -> tuple[int, int]:
    if isinstance(group, str):
        return match.span(group)
    return next(span for name in group if (span := match.span(name))[0] >= 0)


class Scanner:
    __slots__ = (
        "_any_anchor", "_hinted", "_plan", "_run_reach", "_short", "_thresholds", "behind", "detectors", "normalises",
    )  # fmt: skip

    def __init__(
        self, detectors: Sequence[Detector], thresholds: Mapping[str, float] | None = None, normalises: bool = True
    ):
        """`thresholds`: the least confidence a hit needs, by detector name (default: the detector's own);
        `normalises`: detect on the normal form of the text (see normalise.py)."""
        self.detectors = tuple(detectors)
        self.behind = max((d.behind for d in self.detectors), default=0) + 1
        """Characters kept before the unreleased text, for lookbehinds and context."""
        self._plan = tuple((d, d.ahead, d.run, _start_parts(d)) for d in self.detectors)
        # A run only matters within its detector's reach of the end: the tail read backwards for runs is no longer.
        self._run_reach = max((d.ahead for d in self.detectors if d.run is not None), default=0)
        chosen = thresholds or {}
        self._thresholds = tuple(chosen.get(d.name, d.threshold) for d in self.detectors)
        self.normalises = normalises
        self._any_anchor = _any_anchor(self.detectors)
        self._short = ShortHold.build(self.detectors)
        self._hinted = tuple((d, parts) for d, _, _, parts in self._plan if d.start_hints and parts is not None)

    def finds_nothing_in(self, text: str) -> bool:
        """True when no detector can match anywhere in `text`: ASCII (its own normal form) without any anchor."""
        return self._any_anchor is not None and text.isascii() and self._any_anchor.search(text) is None

    def new_cache(self, text: str, pos: int = 0) -> list[Any] | None:
        """Per-detector next hits at or after `pos`; a detector missing its required substring, or its anchor
        (found in every match, at or after its start), there has none: one fast search spares the full regex's
        try at every position. When every detector has an anchor, one search for any of them comes first, and
        None means no hit at all (the usual stream event: nothing to ask `next_hit`)."""
        detectors = self.detectors
        if self._any_anchor is not None and self._any_anchor.search(text, pos) is None:
            return None
        return [
            None
            if (d.needs is not None and text.find(d.needs, pos) < 0)
            or (d.anchor is not None and d.anchor.search(text, pos) is None)
            else _UNKNOWN
            for d in detectors
        ]

    @staticmethod
    def _next_for(detector: Detector, threshold: float, text: str, pos: int) -> Hit | None:
        """The first hit at or after `pos`: a candidate its check rejects, or whose confidence is below the
        threshold, is skipped and the search goes on one character later."""
        pattern, pick, group, anchor = detector.pattern, detector.pick, detector.value_group, detector.anchor
        score = detector.score
        if anchor is None or len(text) - pos < ANCHORED_FROM:
            candidates = Scanner._searched(pattern, text, pos)
        else:
            candidates = Scanner._anchored(detector, text, pos)
        for match in candidates:
            span = match.span() if pick is None else pick(match)
            if span is not None and (score is None or score(match, span[0], span[1]) >= threshold):
                value = span if group is None else _value_span(match, group)
                return Hit(detector, span[0], span[1], value[0], value[1])
        return None

    @staticmethod
    def _searched(pattern: re.Pattern[str], text: str, pos: int) -> Iterator[re.Match[str]]:
        while (match := pattern.search(text, pos)) is not None:
            yield match
            pos = match.start() + 1

    @staticmethod
    def _anchored(detector: Detector, text: str, pos: int) -> Iterator[re.Match[str]]:
        """The same candidates, found faster: every match has the anchor at most `anchor_reach` after its start,
        so the regex is only tried at those starts, on text cut `ahead` characters on (it reads no further)."""
        match_at, search_anchor = detector.pattern.match, detector.anchor.search  # type: ignore[union-attr]
        reach, ahead, hints, length = detector.anchor_reach, detector.ahead, detector.anchor_hints, len(text)
        while (found := search_anchor(text, pos)) is not None:
            at = found.start()
            low = max(pos, at - reach)
            if hints and not any(hint in text[low:at].lower() for hint in hints):
                pos = at + 1
                continue
            end = min(length, at + ahead + 1)
            for start in range(low, at + 1):
                if (match := match_at(text, start, end)) is not None:
                    yield match
            pos = at + 1

    def next_hit(self, text: str, pos: int, cache: list[Any]) -> Hit | None:
        """The first hit starting at or after `pos`; `cache` carries each detector's next hit between calls."""
        best: Hit | None = None
        for index, detector in enumerate(self.detectors):
            hit = cache[index]
            if hit is _UNKNOWN or (hit is not None and hit.start < pos):
                hit = cache[index] = self._next_for(detector, self._thresholds[index], text, pos)
            if hit is not None and (
                best is None or hit.start < best.start or (hit.start == best.start and hit.end > best.end)
            ):
                best = hit
        return best

    def hold_from(self, text: str, base: int) -> int:
        """The earliest start at or after `base` that more text could still turn into a hit, or change."""
        return self.hold(text, base, base)[0]

    def hold(self, text: str, base: int, quiet: int) -> tuple[int, int]:
        """`hold_from`, told that the detectors without start hints have no open start before `quiet` (what this
        returned second on a shorter text, or `base`): a start they have settled stays settled as text comes, so
        a stream's next event is searched from there on, not again from `base`."""
        length = len(text)
        short = self._short
        if short is None or length - base >= short.reach:
            return self._hold_each(text, base, length), base
        hold = quiet = short.first(text, quiet if quiet > base else base, length)
        for detector, parts in self._hinted:
            if base < hold:
                found = self._open_start(detector, parts, text, base, length, hold)
                if found < hold:
                    hold = found
        return hold, quiet

    def _hold_each(self, text: str, base: int, length: int) -> int:
        """`hold_from` detector by detector, each searched from what its reach and its `run` leave open."""
        hold = length
        runs: dict[re.Pattern[str], int] = {}  # detectors often share a run class: compute each once
        tail = ""
        for detector, ahead, run, start in self._plan:
            low = length - ahead + 1
            if low < base:
                low = base
            if low >= hold:
                continue
            if run is not None:
                run_start = runs.get(run)
                if run_start is None:
                    if not tail:
                        tail = text[max(base, length - self._run_reach) :][::-1]
                    run_start = runs[run] = length - run.match(tail).end()  # type: ignore[union-attr]
                if run_start > low:
                    low = run_start
                    if low >= hold:
                        continue
            if start is not None:
                low = self._open_start(detector, start, text, low, length, hold)
            if low < hold:
                hold = low
        return hold

    @staticmethod
    def _open_start(detector: Detector, start_parts: _StartParts, text: str, low: int, length: int, limit: int) -> int:
        """The first start at or after `low`: the leftmost of the `start` regex's full heads (none where none of
        the hints is) and of its partial heads at the end of the text (in the last `reach` characters, or, for a
        run of one class, where the run that ends the text starts). Exact below `limit` (the caller's hold so far);
        at or past it, only known to be there too."""
        heads, tails, reach, runs, hints = start_parts
        settled = detector.settled
        while low < limit:
            hinted = hints is None or hints.search(text, low) is not None
            found = heads.search(text, low) if heads is not None and hinted else None
            start = length if found is None else found.start()
            if tails is not None:
                tail_from = length - reach if length - reach > low else low
                if tail_from < start and (found := tails.search(text, tail_from)) is not None and found.start() < start:
                    start = found.start()
            for run, least, most in runs:
                cut = length - most if length - most > low else low
                bound = start if start < limit else limit
                # A run starts before `bound` only if it holds the character before it: one step, no copy (in
                # prose the text's last word is the hold already, and the space before it ends every run).
                if cut < bound and run.match(text, bound - 1).end() == length:  # type: ignore[union-attr]
                    size = run.match(text[cut:][::-1]).end()  # type: ignore[union-attr]
                    if size >= least and length - size < start:
                        start = length - size
            if start >= limit:
                return length
            if settled is not None:
                match = detector.pattern.match(text, start)
                if match is not None and settled(match, length):
                    low = start + 1
                    continue
            return start
        return length

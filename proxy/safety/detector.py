"""What a detector is: a bounded regex, an optional check, and what streaming needs to release text early.

A detector is a regex with bounded repeats (see regexbounds), an optional check that
confirms a candidate (Luhn, mod-97, a decodable JWT header), and what the stream redactor
needs to release text early: `run`, the characters every match is made of (a start followed
by any other character is settled), and `start`, where a match could begin given text that
may still grow (a head such as `sk-` or, at the very end of the text, part of one).
The built-in detectors are in pii_detectors.py and secret_detectors.py; catalogue.py is
the catalogue a policy names them from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxy.safety.regexbounds import bounds

Pick = Callable[[re.Match[str]], tuple[int, int] | None]
Score = Callable[[re.Match[str], int, int], float]
"""Confidence in 0..1 of a confirmed hit at (start, end), from the hit and at most `context` characters before it."""
Settled = Callable[[re.Match[str], int], bool]


@dataclass(frozen=True, slots=True, eq=False)
class Detector:
    name: str  # as the policy names it; the metrics label
    label: str  # the mask token, e.g. [EMAIL]
    pattern: re.Pattern[str]
    ahead: int  # characters the regex may read from a match start
    behind: int  # characters it may read before it
    run: re.Pattern[str] | None = None  # matches a run of the characters every match is made of
    start: re.Pattern[str] | None = None  # where a match could start, when the text may still grow
    pick: Pick | None = None  # confirms a candidate: the span to redact, or None to reject it
    settled: Settled | None = None  # a match found at a start is final once the text reaches this far
    value_group: str | tuple[str, ...] | None = None  # only this group (or the first of these that took part)
    # is replaced: assignments keep their key
    needs: str | None = None  # a substring every match contains: a cheap way to skip text
    anchor: re.Pattern[str] | None = None  # found in every match, at most `anchor_reach` characters after its start
    anchor_reach: int = 0
    anchor_hints: tuple[str, ...] = ()  # one of these (lower case) is in every match, before its anchor
    start_hints: tuple[str, ...] = ()  # one of these (lower case) is in every match of `start` but the
    # alternatives that end in `\Z` (a partial head at the end of the text): a cheap way to skip the rest
    score: Score | None = None  # confidence of a hit; without it every confirmed hit has confidence 1
    threshold: float = 0.5  # default least confidence a hit needs to be redacted (the policy may change it)
    context: int = 0  # characters before a match that `score` may read (kept in streams for it)

    @property
    def tag(self) -> str:
        return self.label[1:-1]


def literal_starts(literals: Iterable[str], after: str = "", ignore_case: bool = False) -> re.Pattern[str]:
    """A head from `literals` (then what `after` allows), or, at the very end of the text, part of one."""
    heads = sorted(set(literals), key=len, reverse=True)
    parts = sorted({head[:i] for head in heads for i in range(1, len(head))}, key=len, reverse=True)
    source = f"(?:{'|'.join(map(re.escape, heads))}){after}"
    if parts:
        source += f"|(?:{'|'.join(map(re.escape, parts))})\\Z"
    return re.compile(source, re.IGNORECASE if ignore_case else 0)


def make(
    name: str,
    label: str,
    source: str,
    flags: int = 0,
    run: str | None = None,
    start: re.Pattern[str] | str | None = None,
    anchor: str | None = None,
    **options: object,
) -> Detector:
    """`anchor`: a fast regex (literals, or single characters spelled out) found in every match near its start;
    the scanner searches for it and runs the detector's regex only around it."""
    pattern = re.compile(source, flags)
    reach = bounds(pattern)
    head = re.compile(start) if isinstance(start, str) else start
    if head is None and reach.literal_prefix:
        head = literal_starts([reach.literal_prefix])
    if anchor is None and reach.literal_prefix:
        anchor = re.escape(reach.literal_prefix)
    context = int(options.get("context", 0))  # type: ignore[call-overload]
    return Detector(
        name=name,
        label=label,
        pattern=pattern,
        ahead=reach.ahead,
        behind=max(reach.behind, context),
        run=re.compile(f"{run}*") if run else None,
        start=head,
        anchor=re.compile(anchor) if anchor else None,
        **options,  # type: ignore[arg-type]
    )

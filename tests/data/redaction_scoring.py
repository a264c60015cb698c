"""Scoring a detector set on the realistic corpus: recall per kind, precision, clean texts touched.

A value is found when one replaced span contains all of it; a clean text is touched when
its output differs from it at all. Shared by the corpus test and bench/redaction.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proxy.safety.detector import Detector
from proxy.safety.scanner import Scanner
from proxy.safety.stream_redactor import redact_whole
from tests.data.redaction_realistic import CLEAN, RECORDS, Clean, Record


def replaced(scanner: Scanner, text: str) -> tuple[str, list[str]]:
    """The redacted text and the original text of every replaced span."""
    spans: list[str] = []

    def replace(detector: Detector, value: str) -> str:
        spans.append(value)
        return detector.label

    return redact_whole(scanner, replace, text), spans


@dataclass
class Score:
    found: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)
    missed: list[tuple[Record, str]] = field(default_factory=list)
    touched: list[tuple[Clean, list[str]]] = field(default_factory=list)
    clean_total: int = 0
    spans: int = 0  # replaced spans on positive records
    true_spans: int = 0  # of those, spans that overlap a labelled value

    @property
    def recall(self) -> float:
        return sum(self.found.values()) / max(1, sum(self.total.values()))

    @property
    def touched_share(self) -> float:
        return len(self.touched) / max(1, self.clean_total)

    @property
    def precision(self) -> float:
        """Replaced spans that hold a labelled value, over all replaced spans (clean texts included)."""
        every = self.spans + sum(len(s) for _, s in self.touched)
        return self.true_spans / max(1, every)


def score(
    detectors: Sequence[Detector],
    records: Sequence[Record] = RECORDS,
    clean: Sequence[Clean] = CLEAN,
    thresholds: Mapping[str, float] | None = None,
) -> Score:
    result = Score()
    scanner = Scanner(detectors, thresholds)
    for record in records:
        _, spans = replaced(scanner, record.text)
        result.spans += len(spans)
        result.true_spans += sum(1 for s in spans if any(v in s or s in v for v in record.values))
        for value in record.values:
            result.total[record.kind] += 1
            if any(value in span for span in spans):
                result.found[record.kind] += 1
            else:
                result.missed.append((record, value))
    scanners: dict[tuple[tuple[str, float], ...], Scanner] = {}
    for item in clean:
        result.clean_total += 1
        key = tuple(sorted(item.thresholds.items()))
        if key not in scanners:
            scanners[key] = Scanner(detectors, {**(thresholds or {}), **item.thresholds})
        out, spans = replaced(scanners[key], item.text)
        if out != item.text:
            result.touched.append((item, spans))
    return result

"""How well redaction does on the realistic corpus, and how Presidio's pattern recognisers do on the same texts.

Prints recall per kind, precision and the share of clean texts changed at all, for every
built-in detector at once (tests/data/redaction_realistic.py; a value counts as found only
when one replaced span covers all of it). Then, if `presidio-analyzer` is installed (a
bench-only extra, `pip install presidio-analyzer`; no spaCy model is needed or loaded), the
same figures for Presidio's pattern recognisers of the kinds both cover (e-mail, phone, US
SSN, card, IBAN, IP) run directly, without an NLP engine, with AnalyzerEngine's default
score threshold (0), and the throughput of both on a clean 512 KB text. Run:
    python bench/redaction_quality.py [--misses]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.redaction import _text
from proxy.safety.catalogue import BUILTIN
from proxy.safety.scanner import Scanner
from proxy.safety.stream_redactor import redact_whole
from tests.data.redaction_realistic import CLEAN, RECORDS
from tests.data.redaction_scoring import score

PII_KINDS = ("email", "phone", "ssn", "credit_card", "iban", "ipv4", "ipv6")


def ours(show_misses: bool) -> None:
    result = score(BUILTIN)
    print(f"agent-proxy, all detectors: {len(RECORDS)} positive records, {len(CLEAN)} clean texts")
    for kind in sorted(result.total):
        found, total = result.found[kind], result.total[kind]
        print(f"  {kind:<15} recall {found:3}/{total:<3} {found / total:.3f}")
    pii = sum(result.found[k] for k in PII_KINDS) / sum(result.total[k] for k in PII_KINDS)
    print(
        f"  overall recall {result.recall:.3f} (PII kinds {pii:.3f}), precision {result.precision:.3f}, "
        f"clean texts touched {len(result.touched)}/{result.clean_total} ({result.touched_share:.1%})"
    )
    if show_misses:
        for record, _ in result.missed:
            print(f"    missed {record.kind}: {record.text[:90]!r}")
        for item, spans in result.touched:
            print(f"    touched {item.category}: {item.text[:80]!r} {spans}")


def _presidio() -> list[Any] | None:
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)  # offline: it falls back to its bundled suffix list
    try:
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            UsSsnRecognizer,
        )
    except ImportError:
        return None
    # PhoneRecognizer uses the phonenumbers library, not a model; the rest are PatternRecognizers.
    kinds = (EmailRecognizer, PhoneRecognizer, UsSsnRecognizer, CreditCardRecognizer, IbanRecognizer, IpRecognizer)
    return [kind() for kind in kinds]


def _presidio_spans(recognizers: list[Any], text: str) -> list[tuple[int, int]]:
    spans = []
    for recognizer in recognizers:
        for result in recognizer.analyze(text, recognizer.supported_entities, None):
            spans.append((result.start, result.end))
    return spans


def presidio(recognizers: list[Any], show_misses: bool) -> None:
    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    true_spans = all_spans = 0
    for record in RECORDS:
        if record.kind not in PII_KINDS:
            continue
        spans = _presidio_spans(recognizers, record.text)
        all_spans += len(spans)
        for value in record.values:
            total[record.kind] += 1
            at = record.text.find(value)
            hit = any(start <= at and at + len(value) <= end for start, end in spans)
            found[record.kind] += hit
            if not hit and show_misses:
                print(f"    presidio missed {record.kind}: {record.text[:90]!r}")
            true_spans += sum(1 for s, e in spans if s < at + len(value) and at < e)
    touched = 0
    for item in CLEAN:
        spans = _presidio_spans(recognizers, item.text)
        all_spans += len(spans)
        if spans:
            touched += 1
            if show_misses:
                print(f"    presidio touched {item.category}: {item.text[:80]!r}")
    print("presidio-analyzer pattern recognisers (PII kinds only; it has no secret recognisers):")
    for kind in PII_KINDS:
        print(f"  {kind:<15} recall {found[kind]:3}/{total[kind]:<3} {found[kind] / total[kind]:.3f}")
    recall, precision = sum(found.values()) / sum(total.values()), true_spans / max(1, all_spans)
    print(
        f"  PII recall {recall:.3f}, precision {precision:.3f}, "
        f"clean texts touched {touched}/{len(CLEAN)} ({touched / len(CLEAN):.1%})"
    )


def throughput(recognizers: list[Any] | None) -> None:
    text = _text(512 * 1024, dense=False)
    size = len(text.encode())
    pii = Scanner([d for d in BUILTIN if d.name in PII_KINDS])
    for label, scanner in (("agent-proxy, all detectors", Scanner(BUILTIN)), ("agent-proxy, PII detectors", pii)):
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            redact_whole(scanner, lambda d, v: d.label, text)
            runs.append(time.perf_counter() - started)
        print(f"  {label:<28} {size / min(runs) / 1e6:6.1f} MB/s on clean prose")
    if recognizers is not None:
        started = time.perf_counter()
        _presidio_spans(recognizers, text)
        rate = size / (time.perf_counter() - started) / 1e6
        print(f"  {'presidio, PII recognisers':<28} {rate:6.1f} MB/s on clean prose")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--misses", action="store_true", help="list every missed value and touched clean text")
    args = parser.parse_args()
    ours(args.misses)
    recognizers = _presidio()
    if recognizers is None:
        print("presidio-analyzer is not installed: `pip install presidio-analyzer` to compare")
    else:
        presidio(recognizers, args.misses)
    print("detection throughput (the scanner alone, 512 KB of clean prose):")
    throughput(recognizers)


if __name__ == "__main__":
    main()

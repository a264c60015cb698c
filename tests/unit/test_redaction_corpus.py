"""Every detector against its labelled corpus: each positive value found and replaced, each negative left alone.

The report test prints recall and false positives of the whole detector set on all
negative and clean texts (run with -s to see it; bench/redaction.py prints it too).
"""

from __future__ import annotations

import pytest

from proxy.safety.catalogue import BUILTIN, BY_NAME, GROUPS, expand
from proxy.safety.scanner import Scanner
from proxy.safety.stream_redactor import redact_whole
from tests.data.redaction_corpus import CLEAN, NEGATIVE, POSITIVE


def _run(scanner: Scanner, text: str) -> tuple[str, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    def replace(detector, value):  # type: ignore[no-untyped-def]
        seen.append((detector.name, value))
        return detector.label

    return redact_whole(scanner, replace, text), seen


def test_every_builtin_detector_has_a_corpus():
    assert set(POSITIVE) == set(NEGATIVE) == set(BY_NAME)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_positives_are_found_exactly(name):
    scanner = Scanner([BY_NAME[name]])
    for example in POSITIVE[name]:
        out, seen = _run(scanner, example.text)
        assert sorted(value for _, value in seen) == sorted(example.values), example.text
        for value in example.values:
            assert value not in out
        assert out.count(BY_NAME[name].label) >= len(example.values)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_negatives_are_left_alone(name):
    scanner = Scanner([BY_NAME[name]])
    for text in NEGATIVE[name]:
        out, seen = _run(scanner, text)
        assert seen == [] and out == text, text


def test_assignments_keep_their_key():
    scanner = Scanner([BY_NAME["password"], BY_NAME["aws_secret_key"]])
    out, _ = _run(scanner, 'DB_PASSWORD=s3cr3t-P4ss! and {"password": "hunter22"}')
    assert out == 'DB_PASSWORD=[SECRET] and {"password": "[SECRET]"}'


def test_groups_expand_to_their_members():
    assert expand(["api_key"]) == list(GROUPS["api_key"])
    assert expand(["email", "pii", "email"]) == ["email", "phone", "ssn", "credit_card", "iban"]


def test_false_positive_report():
    """All detectors at once on every negative and clean text; the figures are printed, not asserted."""
    scanner = Scanner(BUILTIN)
    texts = CLEAN + [text for items in NEGATIVE.values() for text in items]
    flagged = [(text, seen) for text in texts if (seen := _run(scanner, text)[1])]
    positives = [(name, example) for name, items in POSITIVE.items() for example in items]
    # Recalled: no value survives (a token inside a URL may go as part of an e-mail-shaped match, say).
    found = sum(1 for _, example in positives if not any(v in _run(scanner, example.text)[0] for v in example.values))
    print(
        f"\nredaction corpus: {len(positives)} positive texts, recall {found}/{len(positives)}; "
        f"{len(texts)} negative/clean texts, false positives {len(flagged)} ({len(flagged) / len(texts):.1%})"
    )
    for text, seen in flagged:
        print(f"  flagged {[d for d, _ in seen]}: {text[:60]!r}")
    assert found == len(positives)

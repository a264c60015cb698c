"""The one-search hold for short unreleased texts finds exactly what asking each detector finds.

`Scanner.hold_from` decides a stream's usual case (a word or two unreleased) with one union
of every detector's start and run rules (proxy/safety/short_hold.py). These compare it with
the detector-by-detector search at every prefix and every base it is used for, on texts built
from key words, separators, values and near misses cut anywhere, and on the corpus.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.safety.catalogue import BUILTIN, custom_detector
from proxy.safety.config import RedactionConfig
from proxy.safety.content import CompiledRedaction
from proxy.safety.scanner import Scanner
from proxy.safety.short_hold import ShortHold
from tests.data import redaction_corpus as corpus
from tests.unit.test_stream_redactor import NEAR_MISSES, VALUES

SCANNERS = [
    Scanner([*BUILTIN, custom_detector("ticket", r"TCK-\d{4,8}")]),
    CompiledRedaction.from_config(
        RedactionConfig(output=["email", "phone", "ssn", "credit_card", "iban", "api_key", "password"])
    ).output,
    Scanner([d for d in BUILTIN if d.name in ("password", "aws_secret_key", "cli_password")]),
]
KEYS = ["token", "password", "PGPASSWORD", "api_key", "secret access key", "Authorization", "auth", "-p", "-u"]
SEPARATORS = [" ", "=", ": ", " is ", " was ", " `", '"', "'", " = ", "\t", ":"]
PIECES = KEYS + SEPARATORS + VALUES + NEAR_MISSES + ["Xk29vLq7pT", "hunter22", "bearer ", "token "]
TEXTS = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join)


def _agree(text: str) -> None:
    for scanner in SCANNERS:
        short = scanner._short
        assert isinstance(short, ShortHold)
        for end in range(len(text) + 1):
            prefix = text[:end]
            for base in range(max(0, end - short.reach + 1), end + 1):
                expected = scanner._hold_each(prefix, base, end)
                assert scanner._hold_short(short, prefix, base, end) == expected, (prefix, base)


@settings(max_examples=150, deadline=None)
@given(text=TEXTS)
def test_short_hold_finds_what_each_detector_finds(text):
    _agree(text[:80])


def test_short_hold_on_the_corpus():
    texts = [p.text for items in corpus.POSITIVE.values() for p in items]
    texts += [*corpus.CLEAN[:20], "token token token ", "my password is  Xk29vLq7pT.", 'auth=("u", "p4ss")']
    for text in texts:
        _agree(text[:60])


def test_every_builtin_detector_fits_the_union():
    assert all(isinstance(scanner._short, ShortHold) for scanner in SCANNERS)
    assert ShortHold.build([custom_detector("ticket", r"(?i)TCK-\d{4,8}")]) is not None

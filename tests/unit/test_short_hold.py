"""The one-search hold for short unreleased texts finds exactly what asking each detector finds.

`Scanner.hold` decides a stream's usual case (a word or two unreleased) with one union of
every detector's start and run rules (proxy/safety/short_hold.py), searched from where the
previous event's search left off. These compare it with the detector-by-detector search at
every prefix and every base it is used for, and along streams cut anywhere, on texts built
from key words, separators, values and near misses, and on the corpus.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.safety.actions import OutputActions
from proxy.safety.catalogue import BUILTIN, custom_detector
from proxy.safety.config import RedactionConfig
from proxy.safety.content import CompiledRedaction
from proxy.safety.scanner import Scanner
from proxy.safety.short_hold import ShortHold
from proxy.safety.stream_redactor import StreamRedactor, redact_whole
from tests.data import redaction_corpus as corpus
from tests.unit.test_stream_redactor import NEAR_MISSES, VALUES

FULL_CHAIN = ["email", "phone", "ssn", "credit_card", "iban", "api_key", "password"]
DETECTOR_SETS = [
    [*BUILTIN, custom_detector("ticket", r"TCK-\d{4,8}")],
    CompiledRedaction.from_config(RedactionConfig(output=FULL_CHAIN)).output.detectors,  # type: ignore[union-attr]
    [d for d in BUILTIN if d.name in ("password", "aws_secret_key", "cli_password", "private_key")],
]
SCANNERS = [Scanner(detectors) for detectors in DETECTOR_SETS]
KEYS = [
    "token", "password", "PGPASSWORD", "x_PG2PASSWORD", "ABCDEFGHIJKLMNOPclient_secret", "aws_secret access key",
    "secret_access key", "AWS Secret Access Key", "is", "was", "api_key", "Authorization", "auth", "-p", "-u",
]  # fmt: skip
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
                assert scanner.hold(prefix, base, base)[0] == expected, (prefix, base)


@settings(max_examples=150, deadline=None)
@given(text=TEXTS)
def test_short_hold_finds_what_each_detector_finds(text):
    _agree(text[:80])


def test_short_hold_on_the_corpus():
    texts = [p.text for items in corpus.POSITIVE.values() for p in items]
    texts += [*corpus.CLEAN[:20], "token token token ", "my password is  Xk29vLq7pT.", 'auth=("u", "p4ss")']
    for text in texts:
        _agree(text[:60])


class _Checked(Scanner):
    """A scanner whose every hold, searched on from the previous event's point, is checked against a fresh one."""

    __slots__ = ()

    def hold(self, text: str, base: int, quiet: int) -> tuple[int, int]:
        found = super().hold(text, base, quiet)
        assert found[0] == super().hold(text, base, base)[0] == self._hold_each(text, base, len(text)), (text, base)
        return found


def _stream_checked(pieces: list[str]) -> None:
    text = "".join(pieces)
    for detectors in DETECTOR_SETS:
        actions = OutputActions({d.name: "mask" for d in detectors}, b"k" * 16, "tenant")
        redactor = StreamRedactor(_Checked(detectors), actions)
        out = "".join(redactor.feed(piece) for piece in pieces) + redactor.flush()
        assert out == redact_whole(Scanner(detectors), actions, text)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), text=TEXTS)
def test_holds_searched_on_from_the_previous_event_are_the_fresh_ones(data, text):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12)))
    _stream_checked([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=10))
def test_holds_searched_on_when_events_are_whole_pieces(pieces):
    _stream_checked(pieces)


def test_a_value_right_after_a_held_key_word():
    _stream_checked(["token ", "536-22-1234", " is an SSN"])  # within every reach: the one-search hold
    _stream_checked(["password", " is ", "Xk29vLq7pT", "."])


def test_a_key_cut_inside_its_variable_prefix_is_held():
    """`x_PG2` could still become `x_PG2PASSWORD=`: held even where no other detector would hold it."""
    _stream_checked(["export x_PG2", "PASSWORD=Zq8vR2mK9wx now"])
    _stream_checked(["export x_ABCDEFGHIJKLMNOPclient_secre", "t: Zq8vR2mK9wx now"])


def test_a_multi_word_key_cut_after_a_space():
    _stream_checked(["my aws_secret acc", "ess key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", " ok"])
    _stream_checked(["x secret_access k", "ey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", " ok"])


def test_one_word_events_search_only_the_new_word():
    scanner = SCANNERS[1]
    text = "token token "
    hold, quiet = scanner.hold(text, 0, 0)
    assert (hold, quiet) == (6, 12)  # the key word may still take a value; nothing else can start
    assert scanner.hold(text + "token ", 6, quiet) == (12, 18)


def test_every_builtin_detector_fits_the_union():
    assert all(isinstance(scanner._short, ShortHold) for scanner in SCANNERS)
    assert ShortHold.build([custom_detector("ticket", r"(?i)TCK-\d{4,8}")]) is not None

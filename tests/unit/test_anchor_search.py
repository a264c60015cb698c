"""The scanner's search for any detector's anchor, rewritten to start with one class, finds the same starts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.safety.catalogue import BUILTIN, BY_NAME, custom_detector
from proxy.safety.content import CompiledRedaction, ExchangeRedaction, transform
from proxy.safety.regexbounds import first_char_search, first_chars
from proxy.safety.scanner import Scanner
from tests.data import redaction_corpus as corpus

SETS = {
    "all": [*BUILTIN, custom_detector("ticket", r"TCK-\d{4,8}")],
    "full_chain": [BY_NAME[name] for name in ("email", "phone", "ssn", "credit_card", "iban")]
    + [d for d in BUILTIN if d.name.endswith(("_key", "_token", "password"))],
}
PIECES = [
    " ", "\n", "\t", "a", "s", "S", "is", " is ", " was ", " IS ", "@", ":", "=", "`", "-", "_", "+", "(", "1", "12",
    "4111", "DE89", "GB29", "sk-", "sk-ant-", "AKIA", "ASIA", "ghp_", "github_pat_", "xoxb-", "xapp-", "://",
    "-u", "-p", "auth", "token", "password", "é", "😀", "\u200b", "\uff20", "TCK-1234", corpus.JWT[:12],
    "jane\uff20acme.io",
]  # fmt: skip
TEXTS = st.lists(st.sampled_from(PIECES), max_size=16).map("".join)


def either(scanner: Scanner) -> re.Pattern[str]:
    return re.compile("|".join(dict.fromkeys(f"(?:{d.anchor.pattern})" for d in scanner.detectors if d.anchor)))


@pytest.mark.parametrize("name", sorted(SETS))
def test_the_scanners_use_the_fast_form(name):
    scanner = Scanner(SETS[name])
    assert scanner._any_anchor is not None
    assert scanner._any_anchor.pattern.startswith("[")


@pytest.mark.parametrize("name", sorted(SETS))
@settings(max_examples=400)
@given(text=TEXTS, pos=st.integers(0, 20))
def test_the_fast_search_starts_where_the_alternation_does(name, text, pos):
    scanner = Scanner(SETS[name])
    slow = either(scanner).search(text, pos)
    fast = scanner._any_anchor.search(text, pos)  # type: ignore[union-attr]
    assert (None if fast is None else fast.start()) == (None if slow is None else slow.start())


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?:ab|[0-9]x)|(?:\d{2,3})|(?:[^a]b)",  # a negated class first: not spelled back
        r"(?:\bfoo)",  # a boundary first
        r"(?:x?y)",  # an optional first character
        r"(?:(?i:a)b)",  # scoped flags
    ],
)
def test_patterns_that_may_start_otherwise_keep_the_plain_search(pattern):
    assert first_char_search(pattern) is None


@given(text=st.text(alphabet="abxy0123 é\u0100", max_size=20), pos=st.integers(0, 5))
def test_ranges_categories_and_repeats_are_kept(text, pos):
    pattern = r"(?:[a-b]\w)|(?:\d{2,3}x)|(?:(?:y|é)+\s)|(?:\u0100)"
    fast = first_char_search(pattern)
    assert fast is not None
    slow = re.compile(pattern).search(text, pos)
    found = fast.search(text, pos)
    assert (None if found is None else found.start()) == (None if slow is None else slow.start())


@pytest.mark.parametrize("name", sorted(SETS))
@settings(max_examples=300)
@given(text=TEXTS)
def test_a_whole_text_without_anchors_is_given_back_as_the_pipeline_would(name, text):
    detectors = SETS[name]
    compiled = CompiledRedaction(
        output=Scanner(detectors),
        actions={d.name: "mask" for d in detectors},
        stream_text=(),
        hash_key=None,
        input=None,
        input_action="mask",
    )
    redaction = ExchangeRedaction(compiled, "tenant")
    assert redaction.whole("text", text) == transform("text", text, ExchangeRedaction(compiled, "tenant").pipeline)


def test_only_ascii_text_without_any_anchor_is_known_clean():
    scanner = Scanner(SETS["full_chain"])
    assert scanner.finds_nothing_in("token " * 24)
    assert not scanner.finds_nothing_in("mail jane@acme.io")
    assert not scanner.finds_nothing_in("token\uff20acme")  # a fullwidth @ is an @ once normalised


STARTS = [d.start for d in BUILTIN if d.start is not None]


@pytest.mark.parametrize("start", STARTS, ids=[d.name for d in BUILTIN if d.start is not None])
@settings(max_examples=200)
@given(text=TEXTS)
def test_a_start_begins_only_at_a_character_of_its_first_class(start, text):
    """The short hold skips to where a `start` can begin (lookbehinds passed over): no non-empty match elsewhere."""
    first = first_chars(start)
    if first is None:
        return
    for at in range(len(text)):
        found = start.match(text, at)
        if found is not None and found.end() > at:
            assert first.match(text, at), (at, text)


def test_first_chars_pass_over_lookarounds_but_not_flags_or_empty_matches():
    assert first_chars(re.compile(r"(?<![\w-])-p|(?<!\w)a\Z")).pattern == r"[\u002d\u0061]"
    assert first_chars(re.compile(r"(?=[cs])(?:cat|sun)")) is not None
    assert first_chars(re.compile(r"a?b")) is None
    assert first_chars(re.compile(r"abc", re.IGNORECASE)) is None

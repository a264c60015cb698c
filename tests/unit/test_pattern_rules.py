"""Blocked-input patterns: those that could backtrack past linear time are refused at load."""

from __future__ import annotations

import re

import pytest

from proxy.policy.load import PolicyError, policy_from_text
from proxy.policy.pattern_rules import backtracking_problem
from proxy.policy.summary import summarise


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (r"(\w+\s?)+$", "unbounded repeat"),
        (r".*foo", "unbounded repeat"),
        (r"\d+-\d+", "unbounded repeat"),
        (r"a{2,}", "unbounded repeat"),
        (r"(\w{1,20}\s?){1,20}$", "repeats a variable-width repeat"),
        (r"(?:cat|dog|cow){1,5}", "repeats an alternation"),
        (r"(?:x(?:ab|cd)){2,3}", "repeats an alternation"),
        (r"x{1,20000}", "can read 20000 characters"),
    ],
)
def test_shapes_that_can_backtrack_are_named(pattern, problem):
    found = backtracking_problem(pattern)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?i)ignore (all )?previous instructions",
        "DAN mode",
        r"ignore.{0,200}instructions",
        r"sk-[A-Za-z0-9]{20,60}",
        r"(?>cat|dog|cow){1,5}",
        r"(?:a{1,3}+){1,4}",
        r"(ab?){1,10}",
        r"\bpassword\s{0,3}[:=]",
    ],
)
def test_linear_shapes_pass(pattern):
    assert backtracking_problem(pattern) is None
    re.compile(pattern)


POLICY = """\
version: 1
upstreams:
  up: {url: "https://api.example.com", protocol: openai}
routes:
  - {prefix: /, upstream: up}
stages:
  input:
    blocked_patterns:
      - "(?i)ignore (all )?previous instructions"
      - {name: greedy, pattern: '(\\w+\\s?)+$'}
"""


def test_a_policy_with_a_backtracking_pattern_does_not_compile():
    policy = policy_from_text(POLICY, env={})
    with pytest.raises(ValueError, match=r"blocked_patterns: pattern 'greedy' has an unbounded repeat"):
        summarise(policy, "p.yaml")


def test_the_same_policy_with_the_pattern_bounded_compiles():
    policy = policy_from_text(POLICY.replace("(\\w+\\s?)+$", "(?>\\w{1,40}\\s?){1,20}$"), env={})
    assert "input" in summarise(policy, "p.yaml")
    with pytest.raises(PolicyError):
        policy_from_text(POLICY.replace("(\\w+\\s?)+$", "(unclosed"), env={})

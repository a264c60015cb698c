"""Checks PromQL expressions against what a proxy really exports: metric names, label names, label values.

An expression is parsed with promql-parser; every selector must name a sample seen in /metrics, every
label it matches on must be one of that sample's labels, and every label an aggregation or a vector
match groups by must come from a selector in the same expression (or be a histogram's `le`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import promql_parser
from prometheus_client.parser import text_string_to_metric_families

# Added by Prometheus itself, not by the proxy: the scrape's health and the target's labels.
PROMETHEUS_SERIES = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


@dataclass
class Exported:
    """Sample names of a /metrics text (or several), with the label names and values seen on each."""

    labels: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    values: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, text: str) -> Exported:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.labels[sample.name].update(sample.labels)
                for name, value in sample.labels.items():
                    self.values[(sample.name, name)].add(value)
        return self


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    return expr


Known = AbstractSet[tuple[str, str, str]]  # (sample, label, value) the code emits but traffic did not show


def check(expr: str, exported: Exported, known_values: Known = frozenset()) -> list[str]:
    """Problems with one expression (empty when it is sound)."""
    problems: list[str] = []
    try:
        tree = promql_parser.parse(expr)
    except ValueError as exc:
        return [f"does not parse: {exc}"]
    _visit(tree, exported, known_values, problems)
    return problems


def _selectors(node: object) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def pre(n: object) -> None:
        if isinstance(n, promql_parser.VectorSelector):
            found.append(n)

    promql_parser.walk(node, pre, None)
    return found


def _available(node: object, exported: Exported) -> set[str]:
    """Label names the series of this subtree can carry."""
    names: set[str] = set(TARGET_LABELS)
    for selector in _selectors(node):
        names |= exported.labels.get(selector.name or "", set()) | PROMETHEUS_SERIES.get(selector.name or "", set())
    return names


def _visit(node: object, exported: Exported, known: Known, problems: list[str]) -> None:
    def pre(n: object) -> None:
        if isinstance(n, promql_parser.VectorSelector):
            _check_selector(n, exported, known, problems)
        elif isinstance(n, promql_parser.AggregateExpr) and n.modifier is not None:
            missing = set(n.modifier.labels) - _available(n.expr, exported)
            if missing:
                problems.append(f"{n.op} groups by labels no selected series has: {sorted(missing)}")
        elif isinstance(n, promql_parser.BinaryExpr) and n.modifier is not None:
            grouped = set(n.modifier.group_labels or [])
            if n.modifier.matching is not None:
                grouped |= set(n.modifier.matching.labels)
            missing = grouped - (_available(n.lhs, exported) | _available(n.rhs, exported))
            if missing:
                problems.append(f"vector matching on labels no selected series has: {sorted(missing)}")

    promql_parser.walk(node, pre, None)


def _check_selector(
    selector: promql_parser.VectorSelector, exported: Exported, known: Known, problems: list[str]
) -> None:
    name = selector.name
    if not name:
        problems.append("a selector without a metric name")
        return
    if name in PROMETHEUS_SERIES:
        labels, values = PROMETHEUS_SERIES[name], None
    elif name in exported.labels:
        labels, values = exported.labels[name] | TARGET_LABELS, exported.values
    else:
        problems.append(f"{name} is not exported")
        return
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__":
            continue
        if matcher.name not in labels:
            problems.append(f"{name} has no label {matcher.name!r} (it has {sorted(labels)})")
        elif values is not None and matcher.op == promql_parser.MatchOp.Equal and matcher.name not in TARGET_LABELS:
            seen = values.get((name, matcher.name), set())
            if matcher.value not in seen and (name, matcher.name, matcher.value) not in known:
                problems.append(f"{name}{{{matcher.name}={matcher.value!r}}} was never seen (seen: {sorted(seen)})")


def metric_names(expr: str) -> set[str]:
    return {s.name for s in _selectors(promql_parser.parse(expr)) if s.name}


def quoted_in(source: str, value: str) -> bool:
    return re.search(rf"""["']{re.escape(value)}["']""", source) is not None

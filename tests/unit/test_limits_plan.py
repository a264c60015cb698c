"""Compiled admissions: a plan's rows and amounts say what check objects said, and a caller's compiled
limits keep admission's order and follow the budget's period."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from proxy.limits.headers import rate_headers
from proxy.limits.keys import day_period, month_period, part
from proxy.limits.limiter import Decision, Limit, LimitPlan
from proxy.policy.compile import compile_policy
from proxy.policy.load import policy_from_text
from proxy.stages.ratelimit import BodyRateLimitStage, RateLimitStage
from proxy.state import MemoryStore, Quota, QuotaDelta, Rate, RateDelta, Release, Slot, arith
from proxy.state.arith import UNIT_EPS
from proxy.state.base import FIGURES, QUOTA, RATE, SLOT, Plan

KEYS = st.sampled_from(["a", "b", "c"])
LIMITS = st.integers(1, 10**9)
AMOUNTS = st.floats(0, 1e9, allow_nan=False)
CHECKS = st.one_of(
    st.builds(Rate, KEYS, LIMITS, st.sampled_from([1.0, 60.0, 3600.0]), AMOUNTS),
    st.builds(Slot, KEYS, LIMITS, st.text("0123456789abcdef", min_size=1, max_size=12), st.floats(1, 600)),
    st.builds(Quota, KEYS, st.floats(0, 1e6), AMOUNTS, st.floats(0, 2e9), st.booleans()),
)
MEANINGS = st.tuples(st.sampled_from(["requests", "tokens", "concurrent"]), st.text(max_size=8))


@given(st.lists(CHECKS, max_size=6))
def test_a_plan_and_its_amounts_are_the_checks_it_was_made_of(checks):
    plan, amounts = Plan.of(checks)
    assert plan.checks(amounts) == checks
    assert plan.marked == any(isinstance(check, Rate | Quota) for check in checks)
    assert plan.rates == tuple((i, c.limit) for i, c in enumerate(checks) if isinstance(c, Rate))


@given(
    st.lists(st.tuples(CHECKS, MEANINGS, st.sampled_from(["requests", "tokens", None])), min_size=1, max_size=6),
    st.data(),
)
def test_a_decisions_reports_from_its_figures_are_those_of_its_limits_and_verdicts(rows, data):
    limits = [Limit(check, reason, text, dimension) for check, (reason, text), dimension in rows]
    compiled, amounts = LimitPlan.of(limits)
    figures: list[float] = []
    for _ in limits:
        figures += (
            data.draw(st.booleans()),
            data.draw(st.floats(0, 1e9)),
            data.draw(st.floats(0, 1e4)),
            data.draw(st.floats(0, 1e4)),
        )
    fast = Decision(True, "direct", None, compiled, amounts, figures)
    assert [limit for limit, _ in fast.results] == limits
    assert [verdict.remaining for _, verdict in fast.results] == figures[1::FIGURES]
    assert fast.reports() == Decision(True, "direct", fast.results).reports()
    for protocol in ("openai", "anthropic", "http"):
        put: dict[str, str] = {}
        fast.put_headers(put, protocol, now=1.8e9)
        assert list(put.items()) == list(rate_headers(protocol, fast.reports(), now=1.8e9).items())


@given(st.lists(CHECKS, max_size=6), st.lists(st.floats(-1e6, 1e6), min_size=6, max_size=6), st.floats(0, 1e9))
def test_a_plans_settlement_applied_at_once_is_its_changes_applied(checks, deltas, now):
    """`settle_now` walks the rows; `adjust_now` takes the changes they stand for: same totals, same results."""
    checks = [replace(check, key=f"{type(check).__name__}:{check.key}") for check in checks]  # a key, one kind
    plan, amounts = Plan.of(checks)
    amounts = [lease if isinstance(lease, str) else delta for lease, delta in zip(amounts, deltas, strict=False)]
    changes = plan.changes(amounts)
    assert [type(change) for change in changes] == [
        {Rate: RateDelta, Slot: Release, Quota: QuotaDelta}[type(check)] for check in checks
    ]
    stores = MemoryStore(), MemoryStore()
    for store in stores:  # the same state first: every check admitted once (or refused alike)
        store.admit_now(plan, Plan.of(checks)[1], now)
    assert stores[0].settle_now(plan, amounts, now + 1) == stores[1].adjust_now(changes, now + 1)
    assert stores[0]._data == stores[1]._data


@given(st.floats(0, 2e9), st.floats(-1e4, 1e4), st.integers(1, 10**10), st.sampled_from([1.0, 60.0, 86400.0]))
def test_the_units_left_are_max_of_zero_and_the_floor_as_they_always_were(now, ahead, limit, period_s):
    tat = now + ahead
    interval = period_s / limit
    expected = max(0.0, float(math.floor((now + period_s - tat) / interval + UNIT_EPS)))
    assert arith._remaining(tat, now, period_s, interval) == expected
    new_tat, _ = arith.rate_adjust(tat, now, limit, period_s, -abs(ahead) * 10)
    assert new_tat == max(now, max(now, tat) - abs(ahead) * 10 * period_s / limit)


POLICY = """
version: 1
upstreams:
  oa: {url: "http://127.0.0.1:9", protocol: openai}
routes:
  - {name: openai, prefix: /v1/, upstream: oa}
auth:
  static_keys:
    - {caller: bob, id: bob-1, sha256: "7bcdd22a7010a60c3170340225a1613a956668b19a72d7af049c4962fe05c292"}
callers:
  bob:
    models: ["*"]
    rate_limit:
      requests_per_minute: 10
      tokens_per_minute: 1000
      concurrent: 2
      per_model: {"gpt-4o*": {requests_per_minute: 3, concurrent: 1}}
    budget: {usd_per_day: 5, usd_per_month: 100}
stages:
  ratelimit: {route_limit: {requests_per_minute: 50, tokens_per_minute: 9000}}
"""


def factory():
    route = compile_policy(policy_from_text(POLICY, env={})).routes[0]
    (stage,) = [stage for stage in route.chain.start().stages if stage.name == "ratelimit"]
    return stage._f


def test_a_callers_compiled_limits_keep_admissions_order_and_amounts():
    f = factory()
    admission = f.admission(f.shared.plans["bob"], "bob", "bob")
    now = datetime(2026, 12, 7, 12, tzinfo=UTC).timestamp()
    variant = admission.variant(0, True, True, now)
    rows = variant.limits.plan.rows
    caller, model, route = f"{f.shared.prefix}c:bob", f"{f.shared.prefix}c:bob:m:{part('gpt-4o*')}", f.route_key
    assert [(kind, key) for kind, key, *_ in rows] == [
        (RATE, f"{caller}:rpm"),
        (RATE, f"{caller}:tpm"),
        (SLOT, f"{caller}:conc"),
        (RATE, f"{model}:rpm"),
        (SLOT, f"{model}:conc"),
        (RATE, f"{route}:rpm"),
        (RATE, f"{route}:tpm"),
        (QUOTA, f"{caller}:usd:d:20261207"),
        (QUOTA, f"{caller}:usd:m:202612"),
    ]
    assert [limit for _, _, limit, *_ in rows] == [10, 1000, 2, 3, 1, 50, 9000, 5, 100]
    assert [meaning[0] for meaning in variant.limits.meanings] == [
        "requests",
        "tokens",
        "concurrent",
        "model_requests",
        "model_concurrent",
        "route_requests",
        "route_tokens",
        "budget_day",
        "budget_month",
    ]
    assert variant.amounts(700, "lease-1", 0.25) == (1, 700, "lease-1", 1, "lease-1", 1, 700, 0.25, 0.25)
    assert variant.slots == [rows[2][1], rows[4][1]]
    assert variant.token_rates == [(rows[1][1], 1000), (rows[6][1], 9000)]
    assert [(row, key) for row, key, *_ in variant.quotas] == [(7, rows[7][1]), (8, rows[8][1])]
    assert variant.gauges == ((7 * FIGURES + 1, 5, "day"), (8 * FIGURES + 1, 100, "month"))  # remaining USD, per period
    # Without an estimate of tokens, or of the budget, those rows are not there.
    fewer = admission.variant(-1, False, False, now)
    assert [key for _, key, *_ in fewer.limits.plan.rows] == [rows[0][1], rows[2][1], rows[5][1]]
    assert fewer.amounts(700, "lease-1", 0.25) == (1, "lease-1", 1)
    assert f.route_only.variant(-1, False, False, now).amounts(700, "lease-1", 0.25) == (1,)  # one row: a tuple too
    # The completion releases the slots, then corrects the token rates (unless the estimate was right) and quotas.
    slots, rates, quotas = [rows[2], rows[4]], [rows[1], rows[6]], [rows[7], rows[8]]
    for corrected, tokens, expected_rows, expected_amounts in (
        (False, 0, slots, ("l", "l")),
        (True, 0, slots + quotas, ("l", "l", 0.5, 0.5)),
        (True, -7, slots + rates + quotas, ("l", "l", -7, -7, 0.5, 0.5)),
    ):
        plan, amounts = variant.settlement("l", corrected, tokens, 0.5)
        assert (list(plan.rows), amounts) == (expected_rows, expected_amounts)
    assert fewer.settlement("l", True, -7, 0.5)[1] == ("l",)
    assert f.route_only.variant(-1, False, False, now).settlement("l", True, -7, 0.5)[1] == ()


def test_a_budget_variant_serves_within_its_periods_and_is_compiled_again_after():
    f = factory()
    admission = f.admission(f.shared.plans["bob"], "bob", "bob")
    before = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    first = admission.variant(-1, True, True, before)
    assert admission.variant(-1, True, True, before + 0.5) is first
    after = before + 2  # a new day, and a new month
    second = admission.variant(-1, True, True, after)
    assert second is not first
    for variant, at in ((first, before), (second, after)):
        quotas = {period: (key, end) for _, key, _, end, period in variant.quotas}
        day, day_end = day_period(at)
        month, month_end = month_period(at)
        assert quotas["day"][0].endswith(":usd:d:" + day) and quotas["day"][1] == day_end
        assert quotas["month"][0].endswith(":usd:m:" + month) and quotas["month"][1] == month_end
    assert admission.variant(-1, True, True, before) is not second  # a clock that went back: compiled again


def chain_of(policy: str):
    route = compile_policy(policy_from_text(policy, env={})).routes[0]
    run = route.chain.start()
    (stage,) = [stage for stage in run.stages if stage.name == "ratelimit"]
    return stage, [stage.name for stage in run.admitting]


def test_a_route_whose_every_admission_waits_for_the_body_skips_the_header_hook():
    stage, admitting = chain_of(POLICY)  # route tokens, and a profile with tokens, a budget, model limits
    assert type(stage) is BodyRateLimitStage and "ratelimit" not in admitting
    # Admitted before the body is read: callers without limits through a route's limit on requests only, a
    # profile that limits requests only, any caller of a route whose protocol does not parse the body.
    rpm_only = POLICY.replace("{requests_per_minute: 50, tokens_per_minute: 9000}", "{requests_per_minute: 50}")
    for policy in (
        rpm_only,
        POLICY.replace("callers:\n", "callers:\n  alice: {rate_limit: {requests_per_minute: 5}}\n").split("stages:")[0],
        POLICY.replace("protocol: openai", "protocol: http"),
    ):
        stage, admitting = chain_of(policy)
        assert type(stage) is RateLimitStage and "ratelimit" in admitting

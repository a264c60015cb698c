"""deploy/observability/: every dashboard and alert expression names metrics and labels the proxy exports.

Checked against the /metrics of the compose topology's two live replicas (what Prometheus scrapes
there) after traffic that makes each series appear: answers, a redaction, spend against a budget,
upstream 500s that open a breaker, a rate-limit refusal and a policy reload.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import promql_parser
import pytest
import yaml

from tests.deploy.promql_check import Exported, check, grafana_to_promql, metric_names, quoted_in
from tests.deploy.topology import Topology
from tests.fixtures.http import request
from tests.fixtures.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
ALERTS = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "mail jane@corp.io the summary"}]}
AUTH = {"authorization": "Bearer demo-key-1"}  # the compose policy's agent key
BREAKER_THRESHOLD = 5  # upstreams.mock-openai.circuit_breaker.failure_threshold in deploy/compose/policy.yaml

# Label values the proxy emits only on events this traffic does not cause; each must be a literal in proxy/.
KNOWN_VALUES = {
    ("agent_proxy_ledger_records_total", "result", "dropped"),
    ("agent_proxy_policy_reloads_total", "result", "invalid"),
}

# What the dashboard must show (the list), as the metric behind each.
REQUIRED = {
    "traffic": "agent_proxy_requests_total",
    "errors by kind": "agent_proxy_errors_total",
    "latency": "agent_proxy_request_duration_seconds_bucket",
    "time to first byte": "agent_proxy_time_to_first_byte_seconds_bucket",
    "spend per caller": "agent_proxy_cost_usd_total",
    "budget burn": "agent_proxy_budget_remaining_usd",
    "breaker states": "agent_proxy_circuit_state",
    "redaction counts": "agent_proxy_redactions_total",
}


def dashboard_exprs() -> dict[str, str]:
    return {
        f"dashboard panel {panel['title']!r} {target['refId']}": grafana_to_promql(target["expr"])
        for panel in DASHBOARD["panels"]
        for target in panel.get("targets", [])
    }


def alert_exprs() -> dict[str, str]:
    return {f"alert {rule['alert']}": rule["expr"] for group in ALERTS["groups"] for rule in group["rules"]}


@pytest.fixture(scope="module")
def exported(topology: Topology) -> Exported:
    one, two = (topology.url(name) for name in topology.proxies())
    assert request("POST", two + CHAT, body=BODY, headers=AUTH).status == 200
    for _ in range(BREAKER_THRESHOLD):
        assert request("POST", one + CHAT, body=BODY, headers={**AUTH, "x-mock-fault": "status_500"}).status == 500
    assert request("POST", one + CHAT, body=BODY, headers=AUTH).status == 429  # 6 a minute across both
    name = topology.proxies()[1]
    topology.processes[name].send_signal(signal.SIGHUP)
    wait_for(lambda: 'agent_proxy_policy_reloads_total{result="ok"} 1.0' in metrics_text(two))
    for url in (one, two):  # the ledger writes in batches, off the request path
        wait_for(lambda u=url: 'agent_proxy_ledger_records_total{result="written"}' in metrics_text(u))
    scraped = Exported()
    for url in (one, two):
        scraped.add(metrics_text(url))
    return scraped


def metrics_text(url: str) -> str:
    return request("GET", url + "/metrics").body.decode()


@pytest.mark.parametrize(
    "expr", [pytest.param(expr, id=where) for where, expr in sorted({**dashboard_exprs(), **alert_exprs()}.items())]
)
def test_expression_names_exported_metrics_and_labels(exported: Exported, expr: str):
    assert check(expr, exported, KNOWN_VALUES) == [], expr


def test_label_values_not_seen_live_are_ones_the_proxy_emits():
    source = "\n".join(p.read_text() for p in (ROOT / "proxy").rglob("*.py"))
    for _, _, value in KNOWN_VALUES:
        assert quoted_in(source, value), value


@pytest.mark.parametrize(
    "expr",
    [
        "rate(agent_proxy_request_total[5m])",  # misspelt metric
        "sum by (model) (rate(agent_proxy_requests_total[5m]))",  # label the metric does not have
        'agent_proxy_errors_total{reason="timeout"}',  # matcher on a missing label
        'agent_proxy_requests_total{status_class="6xx"}',  # a value never emitted
        "histogram_quantile(0.9, rate(agent_proxy_request_duration_seconds[5m]))",  # histogram without _bucket
        "sum(rate(agent_proxy_requests_total[5m])) / on (caller) sum(agent_proxy_requests_in_flight)",
        "rate(agent_proxy_requests_total[5m",  # does not parse
    ],
)
def test_the_check_refuses_what_is_not_exported(exported: Exported, expr: str):
    assert check(expr, exported, KNOWN_VALUES)


def test_dashboard_covers_traffic_errors_latency_spend_budgets_breakers_and_redactions():
    used = set().union(*(metric_names(e) for e in dashboard_exprs().values()))
    missing = {area: metric for area, metric in REQUIRED.items() if metric not in used}
    assert not missing
    assert DASHBOARD["uid"] and all(p.get("targets") or p["type"] == "row" for p in DASHBOARD["panels"])


def test_alerts_are_complete_rules():
    rules = [rule for group in ALERTS["groups"] for rule in group["rules"]]
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule["alert"]
        if "for" in rule:
            assert promql_parser.parse_duration(rule["for"]).total_seconds() > 0, rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    covered = set().union(*(metric_names(r["expr"]) for r in rules))
    for metric in ("agent_proxy_requests_total", "agent_proxy_circuit_state", "agent_proxy_budget_remaining_usd"):
        assert metric in covered

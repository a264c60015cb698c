"""deploy/compose.yaml as processes: two replicas behind one Redis hold one rate limit between them."""

from __future__ import annotations

import yaml

from proxy.policy.load import load_policy
from tests.deploy.topology import COMPOSE, Topology
from tests.fixtures.http import request

LIMIT = 6  # callers.agent.rate_limit.requests_per_minute in deploy/compose/policy.yaml


def test_two_replicas_share_one_rate_limit_through_redis(topology: Topology):
    assert len(topology.proxies()) == 2
    answers = topology.run_agent()
    sent = sum(sum(counts.values()) for counts in answers.values())
    admitted = sum(counts.get(200, 0) for counts in answers.values())
    assert sent == 10
    # Six in all, not six per replica: each replica saw the other's admissions in Redis.
    assert admitted == LIMIT, answers
    for name, counts in answers.items():
        assert set(counts) == {200, 429}, (name, counts)
        metrics = request("GET", topology.url(name) + "/metrics").body.decode()
        assert 'agent_proxy_limit_refusals_total{caller="agent",mode="enforce"' in metrics


def test_prometheus_scrapes_both_replicas(topology: Topology):
    config = yaml.safe_load((COMPOSE.parent / "observability" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:8080" for name in topology.proxies()}
    assert config["rule_files"] == ["/etc/prometheus/alerts.yaml"]
    mounted = [v.split(":")[1] for v in topology.services["prometheus"]["volumes"]]
    assert "/etc/prometheus/alerts.yaml" in mounted


def test_replicas_get_the_time_the_policy_gives_them_to_drain(topology: Topology):
    policy = load_policy(
        COMPOSE.parent / "compose" / "policy.yaml", {"REDIS_URL": "redis://r:6379/0", "UPSTREAM_URL": "http://u:9000"}
    )
    for name in topology.proxies():
        service = topology.services[name]
        assert service["stop_signal"] == "SIGTERM"
        assert int(service["stop_grace_period"].rstrip("s")) > policy.server.shutdown_timeout_s
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]

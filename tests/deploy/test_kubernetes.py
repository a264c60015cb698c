"""deploy/kubernetes/: valid against the Kubernetes API schemas, hardened, consistent with its own policy."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest

from proxy.policy.load import policy_from_text
from tests.deploy.manifests import KUBERNETES, ROOT, k8s_objects, of_kind, proxy_containers, secret_env

PREFERRED_MARGIN_S = 1  # the grace must outlast preStop + the drain by at least this


def test_every_manifest_is_there():
    assert {p.name for p in KUBERNETES} >= {"sidecar.yaml", "replicated.yaml"}


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.name)
def test_manifests_validate_against_the_bundled_api_schemas(path: Path):
    for obj in k8s_objects(path):
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_the_schema_check_refuses_a_misspelt_field():
    deployment = of_kind(k8s_objects(KUBERNETES[0]), "Deployment")[0]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.name)
def test_proxy_pods_are_hardened_and_probed(path: Path):
    found = list(proxy_containers(k8s_objects(path)))
    assert found, "no agent-proxy container"
    for pod, container in found:
        pod_sc, sc = pod["securityContext"], container["securityContext"]
        assert pod_sc["runAsNonRoot"] and pod_sc["runAsUser"] != 0
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/etc/agent-proxy"]["readOnly"] is True
        # Writable: the ledger volume and /tmp only (the root filesystem is read-only).
        assert set(mounts) == {"/etc/agent-proxy", "/var/lib/agent-proxy", "/tmp"}


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.name)
def test_policy_loads_and_the_grace_period_covers_the_drain(path: Path):
    objects = k8s_objects(path)
    for pod, container in proxy_containers(objects):
        policy_file = container["args"][container["args"].index("--policy") + 1]
        mount = next(m for m in container["volumeMounts"] if policy_file.startswith(m["mountPath"] + "/"))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        config_map = next(
            c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"]
        )
        text = config_map["data"][policy_file.rsplit("/", 1)[-1]]
        policy = policy_from_text(
            text, source=f"{path.name}:{config_map['metadata']['name']}", env=secret_env(objects, container)
        )

        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = pod["terminationGracePeriodSeconds"]
        assert grace >= pre_stop + policy.server.shutdown_timeout_s + PREFERRED_MARGIN_S
        port = policy.server.port
        assert {p["containerPort"] for p in container["ports"]} == {port}
        assert policy.server.host == "0.0.0.0"  # the kubelet's probes come to the pod IP
        assert policy.ledger.path and policy.ledger.path.startswith("/var/lib/agent-proxy/")


def test_sidecar_agent_talks_to_the_proxy_on_loopback_with_its_proxy_key():
    objects = k8s_objects(next(p for p in KUBERNETES if p.name == "sidecar.yaml"))
    pod = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    agent = next(c for c in pod["containers"] if c["name"] == "agent")
    env = {v["name"]: v for v in agent["env"]}
    assert env["OPENAI_BASE_URL"]["value"] == "http://127.0.0.1:8080/v1"
    provider_secrets = {
        v["valueFrom"]["secretKeyRef"]["name"]
        for _, c in proxy_containers(objects)
        for v in c["env"]
        if v["name"] == "OPENAI_API_KEY"
    }
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] not in provider_secrets


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.name)
def test_proxy_pods_run_as_the_images_numeric_user(path: Path):
    user = next(line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER "))
    uid, gid = (int(part) for part in user.split(":"))
    for pod, _ in proxy_containers(k8s_objects(path)):
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)

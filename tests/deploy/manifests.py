"""The deploy/ files, read as their consumers read them (Kubernetes objects, compose services)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
PROXY_IMAGE = "agent-proxy"


def k8s_objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def proxy_containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) for every container that runs the agent-proxy image."""
    for deployment in of_kind(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            if container["image"].split(":")[0].rsplit("/", 1)[-1] == PROXY_IMAGE:
                yield pod, container


def secret_env(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's env as the kubelet would give it, from the Secrets in the same file."""
    secrets = {s["metadata"]["name"]: s.get("stringData", {}) for s in of_kind(objects, "Secret")}
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env

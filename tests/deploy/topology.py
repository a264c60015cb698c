"""deploy/compose.yaml started as local processes: the same services, commands, environment and files.

Each service that runs the agent-proxy image becomes `python -m proxy <command>` (or its entrypoint's
script), Redis a real redis-server; every `service:port` in an environment value or argument is pointed
at that service's own loopback port, and every bind-mounted file at the file in deploy/. Services
without a local binary (Prometheus, Grafana) are not started: their configuration is checked instead.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.manifests import DEPLOY, PROXY_IMAGE, ROOT
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.servers import free_port
from tests.fixtures.waiting import proxy_ready, wait_for

COMPOSE = DEPLOY / "compose.yaml"
LOCAL = {"0.0.0.0": "127.0.0.1"}


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def image_name(service: dict[str, Any]) -> str:
    return service.get("image", "").split(":")[0].rsplit("/", 1)[-1]


def container_port(service: dict[str, Any]) -> int | None:
    command = service.get("command", [])
    if "--port" in command:
        return int(command[command.index("--port") + 1])
    return 6379 if image_name(service) == "redis" else None


def load_compose_services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


@dataclass
class Topology:
    workdir: Path
    services: dict[str, dict[str, Any]] = field(default_factory=load_compose_services)
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis: RedisServer | None = None

    def proxies(self) -> list[str]:
        return [name for name, s in self.services.items() if "serve" in s.get("command", [])]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def localise(self, service: dict[str, Any], value: str) -> str:
        """service:port -> 127.0.0.1:<its port>, container paths -> files in deploy/, 0.0.0.0 -> loopback."""
        for name, port in self.ports.items():
            inner = container_port(self.services[name])
            value = re.sub(rf"(?<![\w.-]){re.escape(name)}:{inner}\b", f"127.0.0.1:{port}", value)
        for mount in service.get("volumes", []):
            source, target = mount.split(":")[:2]
            if source.startswith("."):
                value = value.replace(target, str((COMPOSE.parent / source).resolve()))
        for inner_value, local in LOCAL.items():
            value = value.replace(inner_value, local)
        return value

    def argv(self, name: str) -> list[str]:
        service = self.services[name]
        command = [self.localise(service, a) for a in service.get("command", [])]
        if "--port" in command:
            command[command.index("--port") + 1] = str(self.ports[name])
        entrypoint = service.get("entrypoint")
        if entrypoint:
            assert entrypoint[0] == "python", entrypoint
            return [sys.executable, *[self.localise(service, a) for a in entrypoint[1:]], *command]
        return [sys.executable, "-m", "proxy", *command]

    def env(self, name: str) -> dict[str, str]:
        service = self.services[name]
        own = {k: self.localise(service, str(v)) for k, v in service.get("environment", {}).items()}
        return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **own}

    def start(self, name: str) -> None:
        service = self.services[name]
        if image_name(service) == "redis":
            self.redis = RedisServer(self.ports[name]).start()
            return
        assert image_name(service) == PROXY_IMAGE, name
        cwd = self.workdir / name  # the service's working directory: its ledger volume
        cwd.mkdir()
        with (cwd / "stderr.log").open("wb") as log:  # a file: a pipe nobody reads would fill and block it
            process = self.processes[name] = subprocess.Popen(
                self.argv(name), cwd=cwd, env=self.env(name), stdout=subprocess.DEVNULL, stderr=log
            )
        if name in self.proxies():
            wait_for(lambda: proxy_ready(self.ports[name]) or process.poll() is not None, timeout=30)
        else:
            wait_for(lambda: _accepts(self.ports[name]) or process.poll() is not None, timeout=30)
        assert process.poll() is None, f"{name} exited: {self.log(name)[-2000:]}"

    def log(self, name: str) -> str:
        return (self.workdir / name / "stderr.log").read_text(errors="replace")

    def up(self) -> Topology:
        """Start every long-running service in depends_on order (the agent is run by `run_agent`)."""
        for name, service in self.services.items():
            if container_port(service) is not None:
                self.ports[name] = free_port()
        for name in self._order():
            if name in self.ports:
                self.start(name)
        return self

    def run_agent(self, name: str = "agent") -> dict[str, dict[str, int]]:
        """Run the agent stand-in to completion; its answers by proxy service name."""
        done = subprocess.run(self.argv(name), env=self.env(name), capture_output=True, timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        by_url = json.loads(done.stdout.decode().strip().splitlines()[-1])
        names = {self.url(p): p for p in self.proxies()}
        return {names[url]: {int(k): int(v) for k, v in counts.items()} for url, counts in by_url.items()}

    def down(self) -> dict[str, int]:
        """SIGTERM every process, as `docker compose down` does; their exit codes."""
        codes = {}
        for name, process in reversed(self.processes.items()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                codes[name] = process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait(10)
        if self.redis is not None:
            self.redis.stop()
        return codes

    def _order(self) -> list[str]:
        ordered: list[str] = []

        def visit(name: str) -> None:
            if name in ordered:
                return
            depends = self.services[name].get("depends_on", [])
            for dep in depends if isinstance(depends, list) else depends.keys():
                visit(dep)
            ordered.append(name)

        for name in self.services:
            visit(name)
        return ordered


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False

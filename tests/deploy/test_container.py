"""The Dockerfile's promises, read the way .ci/container_check.py reads it (CI also runs it for real)."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def ci_module(name: str):
    spec = importlib.util.spec_from_file_location(f"ci_{name}", ROOT / ".ci" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


container_check = ci_module("container_check")
lock = ci_module("lock")


def test_final_stage_is_hardened():
    final = container_check.parse_dockerfile((ROOT / "Dockerfile").read_text())[-1]
    assert final.last("STOPSIGNAL") == "SIGTERM"
    uid = final.last("USER").split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert "/readyz" in final.last("HEALTHCHECK")
    assert container_check.exec_form(final.last("ENTRYPOINT")) == ["agent-proxy"]
    assert final.last("WORKDIR") in " ".join(final.all("VOLUME"))


def test_the_default_command_keeps_its_ledger_on_the_volume():
    """The image serves the demo; its relative ledger lands in the WORKDIR, the volume, under a read-only root."""
    final = container_check.parse_dockerfile((ROOT / "Dockerfile").read_text())[-1]
    cmd = container_check.exec_form(final.last("CMD"))
    policy = ROOT / "policies" / Path(cmd[cmd.index("--policy") + 1]).name
    assert container_check.relative_ledger(policy) == "agent-proxy-ledger.sqlite3"


def test_install_uses_the_constraints_file_and_checks_the_encodings():
    build = container_check.parse_dockerfile((ROOT / "Dockerfile").read_text())[0]
    install = " ".join(build.all("RUN"))
    assert re.search(r"pip install [^&]*--constraint constraints\.txt", install)
    assert "get_encoding" in install and "o200k_base" in install and "cl100k_base" in install
    assert any("constraints.txt" in args for args in build.all("COPY"))
    ci = (ROOT / ".ci" / "run").read_text()
    assert "--constraint constraints.txt" in ci


def test_the_image_leaves_the_semantic_extra_to_a_build_arg():
    """190 MB installed for the semantic cache's embedder: opt-in (docs/semantic_cache.md), pinned all the same."""
    build = container_check.parse_dockerfile((ROOT / "Dockerfile").read_text())[0]
    assert container_check.build_args(build, {}) == {"EXTRAS": "fast,redis"}
    assert container_check.build_args(build, {"EXTRAS": "fast,redis,semantic"}) == {"EXTRAS": "fast,redis,semantic"}
    assert any('".[${EXTRAS}]"' in args for args in build.all("RUN"))
    assert {"fast", "redis", "semantic"} <= set(lock.EXTRAS)


def test_constraints_pin_every_runtime_dependency():
    """A dependency added to pyproject.toml without `python .ci/lock.py > constraints.txt` fails here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots = [Requirement(r) for r in project["dependencies"]]
    for extra in lock.EXTRAS:
        roots += [Requirement(r) for r in project["optional-dependencies"][extra]]
    pinned = {
        canonicalize_name(line.split("==")[0])
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert all("==" in line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and line[0] != "#")
    assert set(lock.closure(roots)) == pinned


def test_rebase_moves_only_the_images_paths():
    rebase = container_check.Rebase(Path("/x"), ["/opt/agent-proxy", "/etc/agent-proxy"])
    text = "/opt/agent-proxy/bin/pip install && cat /etc/agent-proxy/demo.yaml /etc/hosts /opt/agent-proxyless"
    assert rebase.text(text) == (
        "/x/opt/agent-proxy/bin/pip install && cat /x/etc/agent-proxy/demo.yaml /etc/hosts /opt/agent-proxyless"
    )

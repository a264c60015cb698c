"""Writes constraints.txt: the runtime extras' whole dependency tree, pinned to this venv's versions.

    python .ci/lock.py > constraints.txt     # run with the venv the tests passed in

Used by the Dockerfile and by .ci/run, so the image and CI install the same versions.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXTRAS = ("fast", "redis", "semantic")  # the image's '.[fast,redis]', and what `--build-arg EXTRAS` may add


def closure(roots: list[Requirement]) -> dict[str, str]:
    env = default_environment()
    pinned: dict[str, str] = {}
    todo = [(req, "") for req in roots]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        wanted = sorted(req.extras)
        if name in pinned and not wanted:
            continue
        dist = metadata.distribution(req.name)
        pinned[name] = dist.version
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            for sub_extra in ["", *wanted]:
                todo.append((sub_req, sub_extra))
    return pinned


def main() -> int:
    project = tomllib.loads(Path(__file__).resolve().parents[1].joinpath("pyproject.toml").read_text())["project"]
    roots = [Requirement(r) for r in project["dependencies"]]
    for extra in EXTRAS:
        roots += [Requirement(r) for r in project["optional-dependencies"][extra]]
    print("# Pinned runtime dependencies of agent-proxy[fast,redis,semantic] (the Dockerfile and .ci/run use them).")
    print("# Regenerate after a dependency change, from a venv where the tests pass:")
    print("#   python .ci/lock.py > constraints.txt")
    for name, version in sorted(closure(roots).items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

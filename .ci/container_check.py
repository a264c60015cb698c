"""Runs the Dockerfile's own install and start commands without a Docker engine.

    python3 .ci/container_check.py [Dockerfile] [--build-arg NAME=VALUE ...]   # as root: the proxy runs as `nobody`

The Dockerfile is read, not copied: its build stage's COPY and RUN lines are replayed in a fresh
directory standing in for the image's root (every absolute path the Dockerfile names is moved under
it), so the install uses constraints.txt exactly as the image does. Then the final stage's ENTRYPOINT
and CMD start the proxy (the offline demo, whose ledger path is relative: the working directory) as an
unprivileged user, in a private mount namespace where / is read-only, /tmp a fresh tmpfs and only the
WORKDIR (the ledger volume) writable, as `docker run --read-only --tmpfs /tmp -v ...` runs it. The
HEALTHCHECK command must pass, the demo must answer a chat completion, the STOPSIGNAL must stop it
with exit code 0 and the ledger must hold the request. Any failure exits 1, loudly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0
UNPRIVILEGED = ("nobody", "nogroup")


class CheckFailed(Exception):
    pass


@dataclass
class Stage:
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [args for instr, args in self.instructions if instr == name]

    def last(self, name: str) -> str:
        found = self.all(name)
        if not found:
            raise CheckFailed(f"the Dockerfile's final stage has no {name}")
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage, continuation lines joined and comments dropped."""
    stages: list[Stage] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instr, _, args = logical.partition(" ")
        logical = ""
        if instr.upper() == "FROM":
            stages.append(Stage())
        elif stages:
            stages[-1].instructions.append((instr.upper(), args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    """ENTRYPOINT/CMD/HEALTHCHECK CMD must use the JSON (exec) form: no shell in the way of signals."""
    try:
        value = json.loads(args)
    except ValueError:
        raise CheckFailed(f"not in exec (JSON) form: {args}") from None
    return [str(v) for v in value]


class Rebase:
    """Moves the image's absolute paths under a stand-in root directory."""

    def __init__(self, root: Path, prefixes: list[str]):
        self.root = root
        self.prefixes = sorted({p.rstrip("/") for p in prefixes if p.startswith("/")}, key=len, reverse=True)
        self._pattern = re.compile("|".join(rf"(?<![\w/.]){re.escape(p)}(?=/|\b|$)" for p in self.prefixes))

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def text(self, value: str) -> str:
        return self._pattern.sub(lambda m: str(self.path(m.group(0))), value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_unprivileged(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        print("   (not root: the proxy runs as the current user)", flush=True)
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise CheckFailed("setpriv (util-linux) is needed to drop to an unprivileged user")
    user, group = UNPRIVILEGED
    return [setpriv, f"--reuid={user}", f"--regid={group}", "--clear-groups", "--no-new-privs", *argv]


def with_read_only_root(argv: list[str], writable: Path) -> list[str]:
    """Run argv in a private mount namespace where / is read-only, `writable` stays writable and /tmp is
    a fresh tmpfs: `docker run --read-only --tmpfs /tmp -v ledger:...` without Docker."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None or subprocess.run([unshare, "--mount", "true"]).returncode != 0:
        print("   (no mount namespace here: the root filesystem stays writable for root)", flush=True)
        return argv
    script = (
        'mount --bind "$1" "$1" && mount -o remount,bind,ro / && mount -t tmpfs -o size=16m,mode=1777 tmpfs /tmp'
        ' && cd "$1" && shift && exec "$@"'
    )
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(writable), *argv]


def replay_copy(args: str, workdir: str, rebase: Rebase) -> None:
    parts = shlex.split(args)
    *sources, dest = parts
    image_dest = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
    target = rebase.path(image_dest)
    if dest.endswith("/") or len(sources) > 1:
        target.mkdir(parents=True, exist_ok=True)
        for src in sources:
            origin = REPO / src
            (shutil.copytree(origin, target / origin.name) if origin.is_dir() else shutil.copy2(origin, target))
        return
    origin = REPO / sources[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    if origin.is_dir():
        shutil.copytree(origin, target, dirs_exist_ok=True)
    else:
        shutil.copy2(origin, target)


def env_of(stage: Stage, rebase: Rebase, shim: Path) -> dict[str, str]:
    env = {"PATH": f"{shim}:/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    for args in stage.all("ENV"):
        for item in shlex.split(args):
            name, _, value = item.partition("=")
            env[name] = rebase.text(value.replace("$PATH", env["PATH"]))
    return env


def build_args(stage: Stage, given: dict[str, str]) -> dict[str, str]:
    """The stage's ARG values: a `--build-arg` given, else the Dockerfile's default, as `docker build` sets them."""
    values = {}
    for args in stage.all("ARG"):
        name, _, default = args.partition("=")
        values[name] = given.get(name, default)
    return values


def build(stage: Stage, rebase: Rebase, shim: Path, given: dict[str, str]) -> None:
    workdir = "/"
    env = {**env_of(stage, rebase, shim), **build_args(stage, given), "PIP_QUIET": "1"}
    for instr, args in stage.instructions:
        if instr == "WORKDIR":
            workdir = args
            rebase.path(workdir).mkdir(parents=True, exist_ok=True)
        elif instr == "COPY":
            replay_copy(args, workdir, rebase)
        elif instr == "RUN":
            command = rebase.text(args)
            print(f"   RUN {command}", flush=True)
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=rebase.path(workdir), env=env)
            if done.returncode != 0:
                raise CheckFailed(f"the Dockerfile's RUN failed (exit {done.returncode}): {args}")


def check(dockerfile: Path, given: dict[str, str]) -> None:
    stages = parse_dockerfile(dockerfile.read_text())
    if len(stages) < 2:
        raise CheckFailed("expected a build stage and a final stage")
    build_stage, final = stages[0], stages[-1]
    if final.last("STOPSIGNAL") != "SIGTERM":
        raise CheckFailed("STOPSIGNAL must be SIGTERM (the proxy drains on it)")
    user = final.last("USER").split(":")[0]
    if not user.isdigit() or int(user) == 0:
        raise CheckFailed(f"USER must be a numeric non-root uid (runAsNonRoot verifies it), not {user!r}")
    healthcheck = final.last("HEALTHCHECK")
    if "/readyz" not in healthcheck:
        raise CheckFailed("the HEALTHCHECK must probe /readyz")
    start = exec_form(final.last("ENTRYPOINT")) + exec_form(final.last("CMD"))
    probe = exec_form(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    workdir = final.last("WORKDIR")

    prefixes = [*build_stage.all("WORKDIR"), workdir]
    for args in [*build_stage.all("COPY"), *final.all("COPY")]:
        prefixes += [p for p in shlex.split(args) if p.startswith("/")]
    # Not under /tmp: the proxy gets a fresh tmpfs there, as in the image.
    root = Path(tempfile.mkdtemp(prefix="agent-proxy-image-", dir="/var/tmp"))
    try:
        os.chmod(root, 0o755)
        rebase = Rebase(root, prefixes)
        shim = root / "usr-local-bin"
        shim.mkdir()
        # The base interpreter, as the image has it: a venv of the caller may live under /tmp, hidden later.
        (shim / "python").symlink_to(os.path.realpath(sys.executable))
        print(f"== container check: replaying the build stage under {root}", flush=True)
        started = time.monotonic()
        build(build_stage, rebase, shim, given)
        print(f"   installed in {time.monotonic() - started:.1f} s", flush=True)
        run_final(final, rebase, shim, start, probe, workdir)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_final(final: Stage, rebase: Rebase, shim: Path, start: list[str], probe: list[str], workdir: str) -> None:
    stage_workdir = "/"
    for instr, args in final.instructions:
        if instr == "WORKDIR":
            stage_workdir = args
        elif instr == "COPY" and not args.startswith("--from"):
            replay_copy(args, stage_workdir, rebase)
            dest = rebase.path(shlex.split(args)[-1])
            for path in [dest, *dest.rglob("*")]:  # the policy directory, read-only as a ConfigMap mount is
                mode = path.stat().st_mode
                path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    ledger = rebase.path(workdir)
    ledger.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(ledger, *UNPRIVILEGED)
    for parent in list(ledger.parents):
        if parent == rebase.root.parent:
            break
        parent.chmod(parent.stat().st_mode | 0o755)

    port = str(free_port())
    local = [rebase.text(a).replace("8080", port).replace("0.0.0.0", "127.0.0.1") for a in start]
    ledger_file = relative_ledger(Path(local[local.index("--policy") + 1]))
    probe = [rebase.text(a).replace("8080", port) for a in probe]
    env = env_of(final, rebase, shim)
    print(f"== container check: starting {' '.join(local)}", flush=True)
    with tempfile.TemporaryFile() as log:
        argv = with_read_only_root(as_unprivileged(local), ledger)
        proxy = subprocess.Popen(argv, cwd=ledger, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(proxy, probe, env, ledger)
            demo_request(port)
            proxy.send_signal(getattr(signal, final.last("STOPSIGNAL")))
            code = proxy.wait(40)
            if code != 0:
                raise CheckFailed(f"the proxy exited {code} on its STOPSIGNAL")
            print("   stopped on SIGTERM with exit code 0", flush=True)
            check_ledger(ledger / ledger_file)
            log.seek(0)
            show_warnings(log.read().decode(errors="replace"))
        except CheckFailed:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            if proxy.poll() is None:
                proxy.kill()
                proxy.wait(10)


def relative_ledger(policy: Path) -> str:
    """The ledger file of the image's default policy: relative, so it lands in the WORKDIR, the ledger
    volume, the one place a read-only root leaves writable."""
    import yaml

    path = ((yaml.safe_load(policy.read_text()) or {}).get("ledger") or {}).get("path")
    if not isinstance(path, str) or not path or Path(path).is_absolute():
        raise CheckFailed(f"{policy.name} must set a relative ledger.path (the WORKDIR is the ledger volume)")
    return path


def check_ledger(path: Path) -> None:
    """The request's record reached the ledger volume (flushed on stop at the latest)."""
    if not path.exists():
        raise CheckFailed(f"no ledger at {path}: the ledger volume was not writable")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = sum(db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables)
    if rows < 1:
        raise CheckFailed("the ledger holds no record of the request")
    print(f"   the ledger volume holds {rows} record(s)", flush=True)


def show_warnings(log: str) -> None:
    """What the image's demo warns about (without the semantic extra: one line, exact caching only)."""
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("level") in ("warning", "error"):
                print(f"   log {record['level']}: {record.get('msg')}", flush=True)


def wait_healthy(proxy: subprocess.Popen[bytes], probe: list[str], env: dict[str, str], cwd: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while subprocess.run(as_unprivileged(probe), env=env, cwd=cwd, capture_output=True).returncode != 0:
        if proxy.poll() is not None or time.monotonic() > deadline:
            raise CheckFailed("the HEALTHCHECK (/readyz) never passed")
        time.sleep(0.2)
    print("   HEALTHCHECK passed (/readyz)", flush=True)
    uid = Path(f"/proc/{proxy.pid}/status").read_text().split("\nUid:")[1].split()[1]
    if os.geteuid() == 0 and uid == "0":
        raise CheckFailed("the proxy runs as root")
    print(f"   running as uid {uid}", flush=True)


def demo_request(port: str) -> None:
    """The image's default CMD is the offline demo: one chat completion proves the package and its data."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body,
        headers={"authorization": "Bearer demo-key-1", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as response:
        answer = json.loads(response.read())
    if not answer["choices"][0]["message"]["content"] or not answer["usage"]["prompt_tokens"]:
        raise CheckFailed(f"the demo answered without content or usage: {answer}")
    print("   the demo answered a chat completion", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dockerfile", nargs="?", type=Path, default=REPO / "Dockerfile")
    parser.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    given = dict(arg.partition("=")[::2] for arg in args.build_arg)
    try:
        check(args.dockerfile, given)
    except (CheckFailed, OSError, subprocess.SubprocessError) as exc:
        print(f"CONTAINER CHECK FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    print("== container check passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

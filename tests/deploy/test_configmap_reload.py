"""A ConfigMap update as the kubelet does it: a new timestamped directory, then `..data` swapped atomically.

The mounted file `policy.yaml` is a symlink to `..data/policy.yaml`, and `..data` a symlink to the
current `..<timestamp>` directory; an update writes a new timestamped directory, points a temporary
symlink at it, renames that over `..data` in one step and removes the old directory. The path the
proxy was given never changes: only what it resolves to.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import openai
import pytest

from tests.fixtures.proxy_server import DEMO_KEY, DEMO_KEY_SHA256, basic_policy
from tests.fixtures.waiting import wait_for

MESSAGES = [{"role": "user", "content": "hi"}]


class ConfigMapVolume:
    """A directory laid out exactly as the kubelet's atomic writer lays out a ConfigMap volume."""

    def __init__(self, root: Path, files: dict[str, str]):
        self.root = root
        self.generation = 0
        self.current: Path | None = None
        self.update(files)
        for name in files:
            (root / name).symlink_to(Path("..data") / name)

    def update(self, files: dict[str, str]) -> None:
        self.generation += 1
        stamped = self.root / f"..2026_12_06_16_00_{self.generation:02d}.{self.generation:09d}"
        stamped.mkdir()
        for name, text in files.items():
            (stamped / name).write_text(text)
        link = self.root / "..data_tmp"
        link.symlink_to(stamped.name)
        os.replace(link, self.root / "..data")  # rename(2): atomic
        if self.current is not None:
            shutil.rmtree(self.current)
        self.current = stamped


def key_works(proxy, key: str) -> bool:
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=key, max_retries=0)
    try:
        return bool(client.chat.completions.create(model="m", messages=MESSAGES).choices)
    except openai.AuthenticationError:
        return False


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size-edit", "longer-edit"])
def test_policy_follows_the_configmap_symlink_swap(proxy_factory, fake_upstream, tmp_path, same_size):
    original = basic_policy(fake_upstream.url, "server: {reload_interval_s: 0.05}")
    volume = ConfigMapVolume(tmp_path, {"policy.yaml": original})
    proxy = proxy_factory(path=tmp_path / "policy.yaml")
    assert key_works(proxy, DEMO_KEY)

    text, previous = original, DEMO_KEY_SHA256
    for n, key in enumerate(["rotated-key-2", "rotated-key-3"], start=1):
        digest = hashlib.sha256(key.encode()).hexdigest()
        text, previous = text.replace(previous, digest), digest
        volume.update({"policy.yaml": text if same_size else text + f"# generation {n}\n"})
        wait_for(lambda n=n: proxy.metric("agent_proxy_policy_reloads_total", {"result": "ok"}) == n)
        assert key_works(proxy, key)
        assert not key_works(proxy, DEMO_KEY)
    assert proxy.metric("agent_proxy_policy_reloads_total", {"result": "invalid"}) == 0
    assert proxy.holder.last_error is None

"""Agent stand-in for deploy/compose.yaml: chat completions round-robin over the proxy replicas.

Standard library only, so it runs in the agent-proxy image. Prints one JSON line: the status codes
each replica answered with. PROXY_URLS (comma-separated), AGENT_KEY, AGENT_REQUESTS.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections import Counter


def ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def chat(url: str, key: str, n: int) -> int:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"mail jane@corp.io summary {n}"}]}
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def main() -> int:
    urls = [u.rstrip("/") for u in os.environ["PROXY_URLS"].split(",")]
    key = os.environ["AGENT_KEY"]
    count = int(os.environ.get("AGENT_REQUESTS", "10"))
    for url in urls:
        ready(url)
    answers: dict[str, Counter[int]] = {url: Counter() for url in urls}
    for n in range(count):
        url = urls[n % len(urls)]
        answers[url][chat(url, key, n)] += 1
    print(json.dumps({url: dict(c) for url, c in answers.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

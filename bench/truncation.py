"""What truncation costs: a 200-message agent conversation trimmed within a budget, per request.

In-process, on the code the truncation stage runs: parse the body, draw the turns (the
adapter), count every message with the offline tokenizer, choose the turns, rebuild and
re-serialise the body; for OpenAI (parallel tool calls) and Anthropic (tool_use/tool_result
blocks) conversations. Cold: no message counted before; warm: the conversation seen before
with one new message, as an agent resends its history (counts come from the cache of
proxy/truncation/counts.py). Also a prompt that is counted (cold) and fits. Then end to end:
the proxy (a separate process, with the mock upstream) with truncation off and on, the same
200-message request sent one at a time (warm after the first). Run:
    python bench/truncation.py [--messages 200] [--repeat 200] [--requests 300]
Figures are for this machine only; the load generator shares its CPUs with the servers.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from proxy_overhead import KEY, POLICY
from support import free_port, start, stop, wait_ready

from proxy.accounting.tokens import count_request, preload
from proxy.protocols import PROTOCOLS
from proxy.stages.truncation import _cut
from proxy.truncation.counts import MESSAGE_COUNTS

WORDS = ["the", "deploy", "finished", "and", "every", "health", "check", "passed", "so", "we", "rolled", "out"]
MODEL = "gpt-4o"
STAGES = """stages:
  usage: {{mode: "off"}}
{truncation}
"""


def _text(index: int, words: int) -> str:
    return " ".join(WORDS[(index + k) % len(WORDS)] for k in range(words))


def _result(index: int) -> str:
    return _text(index, 120)


def openai_body(count: int) -> dict[str, Any]:
    """A system prompt, then rounds of: a user question, two parallel tool calls and their results, a reply."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": _text(0, 60)}]
    index = 0
    while len(messages) < count:
        index += 1
        calls = [
            {"id": f"call_{index}_{k}", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
            for k in range(2)
        ]
        messages += [
            {"role": "user", "content": _text(index, 80)},
            {"role": "assistant", "content": None, "tool_calls": calls},
            *({"role": "tool", "tool_call_id": call["id"], "content": _text(index, 120)} for call in calls),
            {"role": "assistant", "content": _text(index, 60)},
        ]
    return {"model": MODEL, "max_tokens": 512, "messages": messages[:count]}


def anthropic_body(count: int) -> dict[str, Any]:
    """Rounds of: a user question, a tool_use, its tool_result, a reply (a turn ends before the next question)."""
    messages: list[dict[str, Any]] = []
    index = 0
    while len(messages) < count:
        index += 1
        use = {"type": "tool_use", "id": f"toolu_{index}", "name": "lookup", "input": {"q": index}}
        messages += [
            {"role": "user", "content": _text(index, 80)},
            {"role": "assistant", "content": [{"type": "text", "text": _text(index, 20)}, use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": _result(index)}]},
            {"role": "assistant", "content": _text(index, 60)},
        ]
    return {"model": "claude-sonnet-4-5", "max_tokens": 512, "system": _text(0, 60), "messages": messages[:count]}


def stage_work(protocol_name: str, raw: bytes, budget: int) -> tuple[bytes, Any]:
    """What the stage does for one request whose body is over budget."""
    protocol = PROTOCOLS[protocol_name]
    body = orjson.loads(raw)
    conversation = protocol.conversation(body)
    cut = _cut(protocol, body, conversation, protocol.request_model(body), budget)
    if cut.keep is None:
        return raw, cut
    return orjson.dumps(protocol.with_messages(body, cut.keep)), cut


def timed(repeat: int, work: Any) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def in_process(messages: int, repeat: int) -> None:
    preload()
    for name, body in (("openai", openai_body(messages)), ("anthropic", anthropic_body(messages))):
        raw = orjson.dumps(body)
        total = count_request(PROTOCOLS[name], body, body["model"])
        budget = total // 3
        out, cut = stage_work(name, raw, budget)
        after = count_request(PROTOCOLS[name], orjson.loads(out), body["model"])
        assert cut.tokens_after == after <= budget

        def cold(raw: bytes = raw, name: str = name, budget: int = budget) -> None:
            MESSAGE_COUNTS.clear()
            stage_work(name, raw, budget)

        def fits(raw: bytes = raw, name: str = name, total: int = total) -> None:
            MESSAGE_COUNTS.clear()
            stage_work(name, raw, total)

        grown = orjson.dumps({**body, "messages": [*body["messages"], {"role": "user", "content": "and then?"}]})
        stage_work(name, raw, budget)  # the history, counted once
        p50, p95 = timed(repeat, cold)
        warm50, warm95 = timed(repeat, lambda grown=grown, name=name, budget=budget: stage_work(name, grown, budget))
        fits50, _ = timed(
            repeat, lambda raw=raw, name=name, total=total: (MESSAGE_COUNTS.clear(), stage_work(name, raw, total))
        )
        print(
            f"{name:9} {len(body['messages'])} messages, {len(raw) / 1024:.0f} KiB, {total} tokens -> budget {budget}: "
            f"dropped {cut.dropped_messages} messages ({cut.tokens_cut} tokens), kept {after} tokens; "
            f"trim cold p50 {p50 * 1000:.2f} ms p95 {p95 * 1000:.2f} ms, warm p50 {warm50 * 1000:.2f} ms "
            f"p95 {warm95 * 1000:.2f} ms; counted cold and fits p50 {fits50 * 1000:.2f} ms"
        )


def _send(port: int, raw: bytes) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    started = time.perf_counter()
    connection.request("POST", "/v1/chat/completions", raw, headers)
    response = connection.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    connection.close()
    assert response.status == 200, response.status
    return elapsed


def end_to_end(messages: int, requests: int) -> None:
    body = openai_body(messages)
    raw = orjson.dumps(body)
    budget = count_request(PROTOCOLS["openai"], body, MODEL) // 3
    upstream_port = free_port()
    upstream = start(["mock-upstream", "--port", str(upstream_port)])
    try:
        wait_ready(f"http://127.0.0.1:{upstream_port}/v1/models")
        for label, truncation in (
            ("truncation off", ""),
            ("truncation on ", f"  truncation: {{budget_tokens: {budget}, margin_ratio: 0}}"),
        ):
            with tempfile.TemporaryDirectory() as tmp:
                policy = Path(tmp) / "policy.yaml"
                key_hash = hashlib.sha256(KEY.encode()).hexdigest()
                policy.write_text(
                    POLICY.format(upstream_port=upstream_port, key_hash=key_hash) + STAGES.format(truncation=truncation)
                )
                port = free_port()
                proxy = start(["serve", "--policy", str(policy), "--port", str(port), "--host", "127.0.0.1"])
                try:
                    wait_ready(f"http://127.0.0.1:{port}/readyz")
                    for _ in range(20):
                        _send(port, raw)
                    samples = sorted(_send(port, raw) for _ in range(requests))
                finally:
                    stop([proxy])
            p95 = samples[int(len(samples) * 0.95) - 1]
            print(
                f"{label}: {len(raw) / 1024:.0f} KiB request, {requests} sequential: "
                f"p50 {statistics.median(samples) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms"
            )
    finally:
        stop([upstream])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    in_process(args.messages, args.repeat)
    end_to_end(args.messages, args.requests)


if __name__ == "__main__":
    main()

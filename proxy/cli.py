"""The `agent-proxy` command: serve, check, schema, usage, mock-upstream, keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from pathlib import Path

import orjson

from proxy.cli_keys import add_key_commands
from proxy.policy.load import PolicyError, load_policy
from proxy.policy.schema import Policy

DEFAULT_POLICY = Path("policies/default.yaml")


def _load_or_exit(path: Path) -> Policy:
    try:
        return load_policy(path)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.heap_trim import limit_arenas
    from proxy.logs import configure_logging
    from proxy.workers import WORKER_ENV, run_workers

    limit_arenas()
    configure_logging(args.log_level)
    policy = _load_or_exit(args.policy)
    host, port = args.host or policy.server.host, args.port or policy.server.port
    worker = WORKER_ENV in os.environ
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and not worker:
        if port == 0:
            print("--workers needs a fixed port: each worker would listen on a port of its own", file=sys.stderr)
            return 2
        return run_workers(args.workers, args.policy, host, port, args.log_level)

    from proxy.accounting.ledger import LedgerError
    from proxy.server import ListenError, run

    try:
        run(policy, args.policy, host, port, reuse_port=worker)
    except (LedgerError, ListenError) as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Every file is checked, so one run over `policies/` names every broken file; any invalid one exits 2."""
    import logging

    from proxy.policy.summary import summarise

    paths: list[Path] = [*([args.policy] if args.policy else []), *args.files]
    if not paths:
        print("name a policy file: agent-proxy check FILE [FILE ...]", file=sys.stderr)
        return 2
    logger = logging.getLogger("agent_proxy")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the summary lists the policy's warnings itself
    failed = 0
    try:
        for i, path in enumerate(paths):
            try:
                summary = summarise(load_policy(path), str(path))
            except PolicyError as exc:
                print(exc, file=sys.stderr)
                failed += 1
                continue
            except ValueError as exc:  # found while compiling, e.g. an unreadable auth.jwt key file
                print(f"{path}: invalid policy\n  - {exc}", file=sys.stderr)
                failed += 1
                continue
            print(("\n" if i else "") + summary)
    finally:
        logger.setLevel(level)
    if failed and len(paths) > 1:
        print(f"{failed} of {len(paths)} policies invalid", file=sys.stderr)
    return 2 if failed else 0


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(orjson.dumps(Policy.model_json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from proxy.logs import configure_logging
    from proxy.mock_upstream import run_mock_upstream

    configure_logging("info")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_mock_upstream(args.host, args.port))
    return 0


def cmd_keys_hash(args: argparse.Namespace) -> int:
    from proxy.stages.auth import sha256_hex

    key = sys.stdin.readline().strip() if not sys.stdin.isatty() else getpass.getpass("key: ")
    if not key:
        print("no key given", file=sys.stderr)
        return 2
    print(sha256_hex(key))
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    from proxy.accounting.report import parse_since, render_table, report

    try:
        since_s = parse_since(args.since)
        data = report(args.ledger, since_s, args.by)
    except (ValueError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    title = f"usage by {args.by}" + ("" if since_s is None else f", last {args.since}")
    print(render_table(data, title, args.width))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-proxy", description="A sidecar proxy for LLM and tool traffic.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="policy file (default: %(default)s)")
    serve.add_argument("--host", help="listen address (default: the policy's server.host)")
    serve.add_argument("--port", type=int, help="listen port (default: the policy's server.port)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT), supervised by this one (default: %(default)s)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate policies and summarise them")
    check.add_argument("files", type=Path, nargs="*", metavar="FILE", help="policy files")
    check.add_argument("--policy", type=Path, help="a policy file (the same as naming it)")
    check.set_defaults(func=cmd_check)

    schema = sub.add_parser("schema", help="print the policy's JSON Schema")
    schema.set_defaults(func=cmd_schema)

    mock = sub.add_parser("mock-upstream", help="run the built-in mock LLM upstream")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=9999)
    mock.set_defaults(func=cmd_mock_upstream)

    usage = sub.add_parser("usage", help="tokens and spend from a ledger file, as a table")
    usage.add_argument("--ledger", type=Path, required=True, help="the policy's ledger.path")
    usage.add_argument("--since", default="24h", help="90s, 30m, 24h, 7d, 2w or all (default: %(default)s)")
    usage.add_argument("--by", default="caller", choices=["caller", "model", "route", "day"])
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    usage.add_argument("--width", type=int, default=None, help="cut the key column to fit this width")
    usage.set_defaults(func=cmd_usage)

    keys = sub.add_parser("keys", help="caller keys").add_subparsers(dest="keys_command", required=True)
    key_hash = keys.add_parser("hash", help="print the SHA-256 of a key read from stdin, for auth.static_keys")
    key_hash.set_defaults(func=cmd_keys_hash)
    add_key_commands(keys)  # mint, inspect
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

"""`agent-proxy keys mint` and `keys inspect`: HMAC-signed keys from the command line."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

from proxy.auth.keys import HmacKeyVerifier, decode_untrusted, mint, parse_ttl
from proxy.auth.refusals import Refused
from proxy.policy.load import PolicyError, load_policy
from proxy.policy.schema import Policy


def _policy(path: Path) -> Policy | None:
    try:
        return load_policy(path)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return None


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def cmd_keys_mint(args: argparse.Namespace) -> int:
    policy = _policy(args.policy)
    if policy is None:
        return 2
    keys = policy.auth.hmac_keys
    if not keys:
        print(f"{args.policy}: no auth.hmac_keys to sign with", file=sys.stderr)
        return 2
    signing = next((key for key in keys if key.id == args.kid), None) if args.kid else keys[0]
    if signing is None:
        print(f"{args.policy}: auth.hmac_keys has no key '{args.kid}'", file=sys.stderr)
        return 2
    if args.caller not in policy.callers and "default" not in policy.callers:
        print(f"caller '{args.caller}' has no profile in `callers`, and there is no `default`", file=sys.stderr)
        return 2
    scopes = [scope for item in args.scopes for scope in item.split(",") if scope]
    try:
        key = mint(signing.id, signing.secret.get_secret_value(), args.caller, scopes, parse_ttl(args.ttl))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    claims = decode_untrusted(key)
    profile = args.caller if args.caller in policy.callers else "default"
    print(
        f"key {claims.key_id} for caller '{claims.caller}' (profile {profile}), scopes [{', '.join(claims.scopes)}], "
        f"expires {_iso(claims.expires_at)}, signed with '{signing.id}'",
        file=sys.stderr,
    )
    print(key)
    return 0


def cmd_keys_inspect(args: argparse.Namespace) -> int:
    key = args.key if args.key not in (None, "-") else sys.stdin.readline().strip()
    try:
        claims = decode_untrusted(key)
    except ValueError as exc:
        print(f"not a readable agent-proxy key: {exc}", file=sys.stderr)
        return 2
    shown = {
        "caller": claims.caller,
        "key_id": claims.key_id,
        "scopes": list(claims.scopes),
        "signed_with": claims.kid,
        "issued_at": _iso(claims.issued_at),
        "expires_at": _iso(claims.expires_at),
        "verified": "no: pass --policy to check the signature, expiry and revocation",
    }
    status = 0
    if args.policy is not None:
        policy = _policy(args.policy)
        if policy is None:
            return 2
        try:
            HmacKeyVerifier(policy.auth.hmac_keys).verify(key)
            if claims.key_id in policy.auth.revoked:
                raise Refused("revoked")
            shown["verified"] = "valid"
        except Refused as err:
            shown["verified"] = f"refused: {err.reason}"
            status = 1
    sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")
    return status


def add_key_commands(keys: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    mint_cmd = keys.add_parser("mint", help="print a new HMAC-signed key for a caller")
    mint_cmd.add_argument("--policy", type=Path, required=True, help="policy with auth.hmac_keys")
    mint_cmd.add_argument("--caller", required=True, help="caller name; picks the caller profile")
    mint_cmd.add_argument("--ttl", default="30d", help="lifetime: 90s, 30m, 24h, 30d, 2w (default: %(default)s)")
    mint_cmd.add_argument("--scopes", nargs="*", default=[], help="scopes, e.g. admin (space or comma separated)")
    mint_cmd.add_argument("--kid", help="id of the hmac_keys secret to sign with (default: the first)")
    mint_cmd.set_defaults(func=cmd_keys_mint)

    inspect_cmd = keys.add_parser("inspect", help="show what a key claims (untrusted unless --policy is given)")
    inspect_cmd.add_argument("key", nargs="?", help="the key; omitted or '-': read from stdin")
    inspect_cmd.add_argument("--policy", type=Path, help="also verify the key against this policy")
    inspect_cmd.set_defaults(func=cmd_keys_inspect)

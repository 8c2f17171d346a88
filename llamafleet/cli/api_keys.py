"""`llamafleet keys create NAME`: a new API key, printed once, and its entry for the keys file.

The key itself is never stored: the keys file holds its SHA-256, so a leaked keys file (or a
Secret read by the wrong pod) gives no one a key.
"""

from __future__ import annotations

import argparse

import yaml

from controlplane.gateway.access.api_keys import ApiKey, hash_key, new_key

DESCRIPTION = """\
Make a new API key for the gateway. The key is printed once; the gateway stores only its hash.
Add the printed entry under `keys:` in the file given to `llamafleet gateway --keys-file`
(re-read on change: no restart). Example:

  llamafleet keys create team-search --models 'qwen-7b' 'qwen-7b:*' --rpm 600 --tpm 200000
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["create"], help="create: a new key")
    parser.add_argument("name", help="the key's name, shown in metrics and logs (letters, digits, - _ .)")
    parser.add_argument(
        "--models", nargs="+", default=["*"], metavar="PATTERN",
        help="models the key may use, shell patterns (model:adapter for adapters; default: every model)",
    )  # fmt: skip
    parser.add_argument("--admin", action="store_true", help="may call /v1/admin/* and /v1/replicas/*")
    parser.add_argument("--rpm", type=int, default=0, help="requests per minute (0: no limit)")
    parser.add_argument(
        "--tpm", type=int, default=0, help="tokens per minute, prompt + completion (0: no limit)"
    )


def create(args: argparse.Namespace) -> str:
    key = new_key()
    entry = ApiKey(
        name=args.name, sha256=hash_key(key), models=tuple(args.models), admin=args.admin,
        requests_per_minute=args.rpm, tokens_per_minute=args.tpm,
    )  # fmt: skip
    listed = yaml.safe_dump([entry.model_dump(by_alias=True, mode="json")], sort_keys=False)
    return (
        f"API key {args.name} (shown only now; the gateway keeps its hash):\n\n  {key}\n\n"
        "Its entry for the keys file, under `keys:`:\n\n"
        + "".join(f"  {line}\n" for line in listed.splitlines())
    )

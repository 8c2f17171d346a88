"""`llamafleet keys create NAME`: a new API key, printed once, and its entry for the keys file.

The key itself is never stored: the keys file holds its SHA-256, so a leaked keys file (or a
Secret read by the wrong pod) gives no one a key.
"""

from __future__ import annotations

import argparse

import yaml

from controlplane.gateway.access.api_keys import ApiKey, hash_key, new_key
from controlplane.gateway.balancer.fair_queue import PRIORITIES

DESCRIPTION = """\
Make a new API key for the gateway. The key is printed once; the gateway stores only its hash.
Add the printed entry under `keys:` in the file given to `llamafleet gateway --keys-file`
(re-read on change: no restart). Example:

  llamafleet keys create team-search --models 'qwen-7b' 'qwen-7b:*' --rpm 600 --tpm 200000
  llamafleet keys create batch-jobs --tenant analytics --weight 0.5 --priority sheddable

When a model's replicas are busy, its queue serves priorities first, then tenants in turn by
weight (docs/BALANCER.md).
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
    parser.add_argument(
        "--tenant", default="", help="the team its requests queue as (default: the key's name)"
    )
    parser.add_argument("--weight", type=float, default=1.0, help="its tenant's share of turns when queued")
    parser.add_argument(
        "--priority", choices=PRIORITIES, default="standard", help="its requests' priority when queued"
    )
    parser.add_argument(
        "--priorities", nargs="+", choices=PRIORITIES, default=[], metavar="PRIORITY",
        help="other priorities a request may ask for with the x-llamafleet-priority header",
    )  # fmt: skip
    parser.add_argument(
        "--tenant-header", action="store_true",
        help="a trusted upstream: its requests may name their tenant (x-llamafleet-tenant)",
    )  # fmt: skip


def create(args: argparse.Namespace) -> str:
    key = new_key()
    entry = ApiKey(
        name=args.name, sha256=hash_key(key), models=tuple(args.models), admin=args.admin,
        requests_per_minute=args.rpm, tokens_per_minute=args.tpm, tenant=args.tenant, weight=args.weight,
        priority=args.priority, priorities=tuple(args.priorities), tenant_header=args.tenant_header,
    )  # fmt: skip
    listed = yaml.safe_dump([entry.model_dump(by_alias=True, mode="json")], sort_keys=False)
    return (
        f"API key {args.name} (shown only now; the gateway keeps its hash):\n\n  {key}\n\n"
        "Its entry for the keys file, under `keys:`:\n\n"
        + "".join(f"  {line}\n" for line in listed.splitlines())
    )

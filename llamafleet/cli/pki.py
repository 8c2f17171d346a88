"""`llamafleet pki`: make the cluster's credentials by hand (a control plane makes its own on first start).

llamafleet pki init DIR                       # CA, control-plane certificate, bootstrap token,
                                              # gateway/ and admin/ credentials (as a first start)
llamafleet pki issue admin --ca-dir DIR --out OUT    # another admin (CLI) or gateway credential
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from llamafleet.security import pki

DESCRIPTION = """\
Make the cluster's credentials by hand. A control plane generates the whole set in its --tls-dir on
first start, and `llamafleet up` does too; use this to prepare them elsewhere, or to give another
gateway or operator a credential, for example inside the control plane's pod on Kubernetes:

  llamafleet pki issue admin --ca-dir /etc/llamafleet/pki --out /tmp/admin
  llamafleet models --controlplane 127.0.0.1:50051 --tls-dir /tmp/admin
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=["init", "issue"], help="init: a whole new set; issue: one credential"
    )
    parser.add_argument("target", help="init: the folder to fill; issue: the role (admin or gateway)")
    parser.add_argument("--ca-dir", type=Path, default=pki.default_pki_dir(),
                        help="issue: the folder with ca.crt and ca.key (default: %(default)s)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="issue: the folder for ca.crt, tls.crt and tls.key")
    parser.add_argument("--days", type=int, default=365, help="issue: validity in days (default: 365)")
    parser.add_argument("--server-names", nargs="*", default=[],
                        help="init: more DNS names or addresses for the control plane")  # fmt: skip


def run(args: argparse.Namespace) -> str:
    if args.action == "init":
        folder = Path(args.target)
        if not pki.init_pki(folder, args.server_names):
            raise SystemExit(f"llamafleet pki: {folder} already holds a CA (ca.crt); nothing changed")
        return (f"made the cluster's CA and credentials in {folder}: the control plane takes "
                f"--tls-dir {folder}; nodes need {folder / pki.CA_CERT} and {folder / pki.BOOTSTRAP_TOKEN}; "
                f"gateways {folder / 'gateway'}; the CLI {folder / 'admin'}")  # fmt: skip
    if args.target not in ("admin", "gateway"):
        raise SystemExit("llamafleet pki issue: the role is admin or gateway (nodes get theirs by joining)")
    if args.out is None:
        raise SystemExit("llamafleet pki issue: give --out FOLDER")
    try:
        authority = pki.Authority.load(args.ca_dir)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"llamafleet pki issue: no usable CA in {args.ca_dir} ({exc})") from None
    key = pki.new_key()
    cert = authority.issue_role(args.target, key, datetime.timedelta(days=args.days))
    pki.write_credential(args.out, (args.ca_dir / pki.CA_CERT).read_bytes(), cert, key)
    return f"{args.out}: credential for llamafleet:{args.target}, valid {args.days} days"

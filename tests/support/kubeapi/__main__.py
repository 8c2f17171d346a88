"""`python -m tests.support.kubeapi --port N [--crd FILE]`: serve the emulator until SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from aiohttp import web

from tests.support.kubeapi.server import Emulator


def main() -> None:
    parser = argparse.ArgumentParser(description="Kubernetes API server emulator for llamafleet's tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--crd", type=Path, action="append", default=[], help="CRD YAML to install at start")
    parser.add_argument("--history", type=int, default=50_000, help="watch events kept per resource")
    args = parser.parse_args()
    crds = [yaml.safe_load(path.read_text()) for path in args.crd]
    # Open watch streams never finish on their own: do not wait for them at shutdown.
    app = Emulator(crds, args.history).app()
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, shutdown_timeout=0.5)


if __name__ == "__main__":
    main()

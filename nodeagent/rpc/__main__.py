"""`python -m nodeagent.rpc`: a llama.cpp RPC worker serving this node's GPUs (every one llama.cpp
sees; its CPU when it has none) to one head engine.

llama.cpp's RPC protocol has no authentication: bind it to the node's cluster address (never all
interfaces unless told to) and let only the leased head reach it. The server blocks in native
code; the agent's supervisor starts, watches and stops this process like an engine.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from llamafleet.units.sizes import parse_size
from nodeagent.rpc.cache import prune


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodeagent.rpc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--host", required=True, help="address to listen on: the node's cluster address")
    parser.add_argument("--port", type=int, required=True, help="TCP port")
    parser.add_argument("--cache-dir", type=Path, required=True,
                        help="tensor cache, so a reload does not resend the weights")  # fmt: skip
    parser.add_argument("--cache-max", default="20GiB",
                        help="tensor cache size cap; least recently used go first (e.g. 8GiB)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="CPU threads, for layers it computes on a CPU")
    parser.add_argument(
        "--devices", choices=("auto", "gpu", "cpu"), default="auto",
        help="what to serve: the node's GPUs (gpu), its CPU (cpu), or its GPUs when it has any (auto)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-all-interfaces", action="store_true",
        help="allow --host 0.0.0.0 (llama.cpp's RPC has no authentication of its own)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="nodeagent.rpc: %(message)s")
    if args.host in ("0.0.0.0", "::") and not args.allow_all_interfaces:
        print("nodeagent.rpc: refusing to listen on all interfaces: llama.cpp's RPC has no authentication; "
              "give the node's cluster address, or --allow-all-interfaces", file=sys.stderr)  # fmt: skip
        return 2
    try:  # llama.cpp exits the process when it cannot bind: say why first, in one line
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.bind((args.host, args.port))
    except OSError as exc:
        print(f"nodeagent.rpc: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        cache_max = parse_size(args.cache_max)
    except ValueError as exc:
        print(f"nodeagent.rpc: --cache-max: {exc}", file=sys.stderr)
        return 2
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    prune(args.cache_dir, cache_max)
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")  # a crash must not attach gdb to the worker

    from nodeagent.rpc import ggml

    gpus = ggml.gpu_devices()
    if args.devices == "gpu" and not gpus:
        print("nodeagent.rpc: --devices gpu, but llama.cpp sees no GPU here (a CPU-only build, or no "
              "driver); serving the CPU", file=sys.stderr)  # fmt: skip
    ggml.start_server(f"{args.host}:{args.port}", str(args.cache_dir), args.threads,
                      gpu=args.devices != "cpu")  # fmt: skip
    print("nodeagent.rpc: the RPC server stopped", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

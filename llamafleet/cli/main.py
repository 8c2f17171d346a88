"""Entry point of the `llamafleet` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from llamafleet import __version__
from llamafleet.cli import api_keys, cluster_admin, fit, pki
from llamafleet.cli.settings import (
    AgentProcess,
    ControlPlaneProcess,
    GatewayProcess,
    ProcessSettings,
    UpSettings,
)
from llamafleet.core import logs
from llamafleet.core.lifecycle import first_known_error, install_stop_signals, run_until_stopped
from llamafleet.core.settings_cli import add_settings_arguments, settings_from_args

log = logging.getLogger("llamafleet")

DESCRIPTION = """\
llamafleet serves GGUF models with llama.cpp across a cluster behind one OpenAI-style API.

Start here:  llamafleet up          (everything on this machine, serving smollm2-135m)
Cluster:     llamafleet controlplane / gateway / agent   (one process each)
Inspect:     llamafleet nodes / models
Plan:        llamafleet fit MODEL.gguf   (RAM/VRAM a model needs; no cluster needed)
Keys:        llamafleet keys create NAME (API keys scoped to models, with quotas)
             llamafleet pki init DIR / issue admin (the cluster's certificates; docs/SECURITY.md)

Every option can also be set by an environment variable, shown in each command's --help.
"""

SHUTDOWN_GRACE_S = 20.0


def _add_process(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    model: type[ProcessSettings],
    help_text: str,
    description: str,
    prefix_groups: bool = False,
) -> None:
    parser = sub.add_parser(
        name, help=help_text, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_settings_arguments(parser, model, prefix_groups=prefix_groups)
    parser.set_defaults(command=name, _settings=model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamafleet", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"llamafleet {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_process(
        sub, "up", UpSettings, "run control plane, gateway and one agent on this machine",
        "Start an embedded cluster on localhost: the control plane, the gateway (port 8080)\n"
        "and one node agent, serving the models in --controlplane-models (default: smollm2-135m).\n"
        "Prints the API's base URL and a ready-to-paste curl once the models are ready.",
        prefix_groups=True,
    )  # fmt: skip
    _add_process(
        sub, "controlplane", ControlPlaneProcess, "run the control plane (desired state, placement, gRPC)",
        "Run the control plane: reads desired models (--models FILE), accepts node agents'\n"
        "streams, places replicas, and serves the routing table to gateways over gRPC.",
    )  # fmt: skip
    _add_process(
        sub, "gateway", GatewayProcess, "run the OpenAI-style gateway",
        "Serve the OpenAI-style API (/v1/models, /v1/chat/completions, /v1/completions),\n"
        "routing each request to a ready engine replica; routes come from --controlplane.",
    )  # fmt: skip
    _add_process(
        sub, "agent", AgentProcess, "run a node agent (engines on this node)",
        "Run the node agent: reports this node's hardware to the control plane and runs the\n"
        "engine processes it is assigned, restarting them when they crash.",
    )  # fmt: skip
    for name, tool, help_text in (
        ("fit", fit, "estimate a model's RAM/VRAM and whether it fits (no cluster needed)"),
        ("keys", api_keys, "make API keys for the gateway (scoped to models, with quotas)"),
        ("pki", pki, "make the cluster's CA, certificates and bootstrap token by hand"),
    ):
        tool_parser = sub.add_parser(name, help=help_text, description=tool.DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        tool.add_arguments(tool_parser)
        tool_parser.set_defaults(command=name)
    for name, help_text in (
        ("nodes", "list the nodes and their hardware"),
        ("models", "list models, replicas, status"),
    ):
        inspect_parser = sub.add_parser(
            name, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}."
        )
        inspect_parser.add_argument(
            "--controlplane", default="127.0.0.1:50051", metavar="HOST:PORT",
            help="control plane gRPC address (default: 127.0.0.1:50051)",
        )  # fmt: skip
        inspect_parser.add_argument(
            "--tls-dir", type=Path, default=None, metavar="DIR",
            help="admin credential (ca.crt, tls.crt, tls.key; CN llamafleet:admin) "
            "(default: the one a control plane generated on this machine, ~/.cache/llamafleet/pki/admin)",
        )  # fmt: skip
        inspect_parser.add_argument(
            "--insecure", action="store_true", help="plaintext, to a control plane run with --insecure"
        )
        inspect_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        inspect_parser.set_defaults(command=name, cpu_mode=False, gpu_mode=False)
        if name == "nodes":
            inspect_parser.add_argument(
                "action", nargs="?", choices=["list", "drain", "uncordon", "forget"], default="list",
                help="list (default); drain NODE: move its replicas elsewhere and place nothing new there; "
                "uncordon NODE: make it schedulable again; forget NODE: clear the key the node id holds "
                "(its certificates are refused and its stream ends; the bootstrap token may join it again: "
                "a new disk, a replaced machine, a key you suspect was copied)",
            )  # fmt: skip
            inspect_parser.add_argument("node", nargs="?", help="the node to drain, uncordon or forget")
        if name == "models":
            inspect_parser.add_argument(
                "action", nargs="?", choices=["list"], default="list", help="list (default)"
            )
            inspect_parser.add_argument(
                "--cpu-mode", action="store_true",
                help="add the memory fit in CPU mode: RAM needed, fits, largest context "
                "(on the node it runs on, else the best node)",
            )  # fmt: skip
            inspect_parser.add_argument(
                "--gpu-mode", action="store_true",
                help="add the memory fit on the node's GPUs: VRAM at full offload, GPU layers that fit",
            )  # fmt: skip
    return parser


async def _run_single(name: str, runner: Callable[[asyncio.Event], object]) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    await run_until_stopped({name: runner}, stop, SHUTDOWN_GRACE_S)  # type: ignore[dict-item]
    return 0


async def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "fit":
        return await fit.run(args)
    if command == "keys":
        print(api_keys.create(args))
        return 0
    if command == "pki":
        print(pki.run(args))
        return 0
    if command in ("nodes", "models"):
        tls = cluster_admin.admin_tls(args.tls_dir, args.insecure)
        if command == "nodes" and args.action in ("drain", "uncordon", "forget"):
            if not args.node:
                raise SystemExit(f"llamafleet nodes {args.action}: name the node (see `llamafleet nodes`)")
            if args.action == "forget":
                print(await cluster_admin.forget(args.controlplane, args.node, tls))
            else:
                print(await cluster_admin.cordon(args.controlplane, args.node, args.action == "drain", tls))
        elif command == "nodes":
            print(await cluster_admin.show_nodes(args.controlplane, args.json, tls))
        else:
            print(
                await cluster_admin.show_models(
                    args.controlplane, args.json, args.cpu_mode, args.gpu_mode, tls
                )
            )
        return 0
    settings = settings_from_args(args._settings, args)
    logs.configure(settings.log_level, component=command)
    if isinstance(settings, UpSettings):
        from llamafleet.cli.embedded import up

        return await up(settings)
    if isinstance(settings, ControlPlaneProcess):
        from controlplane.server import ControlPlane

        return await _run_single("controlplane", ControlPlane(settings.controlplane).run)
    if isinstance(settings, GatewayProcess):
        from controlplane.gateway.server import Gateway

        return await _run_single("gateway", Gateway(settings.gateway, CollectorRegistry()).run)
    if isinstance(settings, AgentProcess):
        from nodeagent.agent import Agent

        return await _run_single("agent", Agent(settings.agent, CollectorRegistry()).run)
    raise AssertionError(command)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_dispatch(args))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        known = first_known_error(exc)
        if known is None:
            raise
        print(f"llamafleet: {getattr(known, 'message', known)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

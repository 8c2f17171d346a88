"""Entry point of the engine process: `python -m nodeagent.engine --model-path … --port …`.

The node agent starts this; people rarely need to. It serves one model replica over HTTP,
answers /health with 503 while the model loads, and exits when its parent agent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llamafleet.contract.replica import DEFAULT_CACHE_RAM_MIB, AdapterSpec, Pooling
from llamafleet.core import logs, tracing
from llamafleet.core.chat_templates import template_error
from llamafleet.core.errors import InvalidRequest
from llamafleet.core.lifecycle import install_stop_signals, run
from llamafleet.core.request_defaults import RequestDefaults
from llamafleet.core.settings_cli import add_settings_arguments, settings_from_args
from llamafleet.http.body_limit import DEFAULT_MAX_BODY_BYTES
from llamafleet.http.server import serve_until
from llamafleet.security.engine_auth import ENGINE_SECRET_ENV
from nodeagent.engine.batcher import BatcherSettings
from nodeagent.engine.core import BatchingCore, EngineParams
from nodeagent.engine.draft_model import P_MIN
from nodeagent.engine.http import create_app
from nodeagent.engine.metrics import EngineMetrics
from nodeagent.engine.native import NativeConfig
from nodeagent.engine.speculative import Speculative
from nodeagent.hardware.cpus import detect as detect_cpus
from nodeagent.rpc.ggml import RemotePart

log = logging.getLogger("nodeagent.engine")

EXIT_NO_PORT = 2
EXIT_LOAD_FAILED = 3


class EngineOptions(BaseModel):
    """The model replica this process serves."""

    model_path: Path = Field(default=Path("model.gguf"), description="GGUF file to load")
    model_name: str = Field(default="model", description="Name clients use for this model")
    host: str = Field(default="127.0.0.1", description="Address to bind the HTTP server to")
    port: int = Field(default=8081, description="HTTP port")
    listen_fd: int = Field(
        default=-1,
        description="Serve on this inherited, already listening socket instead of binding --host:--port "
        "(the agent binds first, so no other process can take the port in between)",
    )
    context_length: int = Field(default=2048, ge=16, description="Context window per slot, in tokens")
    parallel_slots: int = Field(default=4, ge=1, le=256, description="Sequences decoded together (slots)")
    n_gpu_layers: int = Field(default=-1, description="Layers to offload to GPUs (-1: all)")
    n_threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads for generation and prompts (0: the physical cores this process may use, "
        "within its affinity mask and cgroup CPU quota); the agent always passes its share of the node",
    )
    batch_size: int = Field(
        default=512, ge=32, description="Most tokens in one decode step (llama.cpp n_batch)"
    )
    ubatch_size: int = Field(
        default=512, ge=32, description="Physical batch (n_ubatch); also the longest input for embeddings"
    )
    prefill_chunk: int = Field(
        default=512,
        ge=16,
        description="Most prompt tokens prefilled per step, so long prompts never stall running streams",
    )
    queue_limit: int = Field(
        default=64, ge=0, description="Requests that may wait for a free slot; more get 429 with Retry-After"
    )
    speculative: Speculative = Field(
        default="off",
        description="Speculative decoding: ngram drafts each sequence's next tokens from its own context "
        "(prompt lookup), draft has --draft-model-path guess them; drafts are verified in the batched step "
        'and the output is the same as without. A request opts out with "speculative": false',
    )
    draft_model_path: Path | None = Field(
        default=None,
        description="With --speculative draft: a smaller GGUF of the same vocabulary (refused otherwise) "
        "that drafts, greedily, in a context of its own",
    )
    draft_max: int = Field(default=8, ge=1, le=64, description="Most tokens drafted for a sequence per step")
    draft_min: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Fewest draft tokens verified where a draft is found, even where the measured step "
        "cost says it does not pay (0: the cost decides)",
    )
    draft_p_min: float = Field(
        default=P_MIN,
        ge=0,
        le=1,
        description="A draft model's drafts stop at a token it gives less than this probability",
    )
    cache_ram: int = Field(
        default=DEFAULT_CACHE_RAM_MIB,
        ge=0,
        description="MiB of host memory for prompt states saved from slots before a new prompt overwrites "
        "them, restored when a prompt continues one (a conversation's next turn): llama-server's "
        "--cache-ram (0: off)",
    )
    embeddings: bool = Field(default=False, description="Serve /v1/embeddings (pooled, L2-normalised)")
    pooling: Pooling = Field(
        default="auto",
        description="Embedding pooling; auto takes the GGUF's, else mean (rank: a reranker, /v1/rerank)",
    )
    adapters: list[str] = Field(
        default_factory=list, description="LoRA adapters to load at start, each NAME=PATH[@SCALE]"
    )
    adapter_dirs: list[Path] = Field(
        default_factory=list,
        description="Folders adapters loaded at runtime (POST /adapters) must be in, symlinks resolved "
        "(none: any path)",
    )
    rpc_parts: list[str] = Field(
        default_factory=list,
        description="Layer ranges on llama.cpp RPC workers, each HOST:PORT=FIRST-LAST from layer 0 up; "
        "the remaining layers and the output stay on this engine",
    )
    decode_timeout_s: float = Field(
        default=0.0,
        ge=0,
        description="Exit when one decode step runs longer (llama.cpp's RPC has no timeouts; "
        "0: 30 s with --rpc-parts, else off)",
    )
    shutdown_grace_s: float = Field(
        default=13.0, ge=0, description="On SIGTERM: stop accepting, let requests in flight finish this long"
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=0,
        description="Largest request body accepted, in bytes (413 beyond)",
    )
    cpu_repack: bool = Field(
        default=True,
        description="Let llama.cpp repack weights for this CPU's faster kernels (extra buffer types). "
        "RPC workers never repack, so --no-cpu-repack makes a split head compute exactly as its workers",
    )
    request_defaults: str = Field(
        default="",
        description="Defaults for requests that set none, as JSON, e.g. "
        '\'{"temperature": 0.2, "max_tokens": 512}\' (temperature, top_p, top_k, min_p, '
        "repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, max_tokens, seed); "
        "before the GGUF's own general.sampling.* keys",
    )
    chat_template_file: Path | None = Field(
        default=None, description="A Jinja chat template used instead of the GGUF's own"
    )
    parent_pid: int = Field(default=0, description="Exit when this process dies (0: don't watch)")

    @model_validator(mode="after")
    def _draft_model_with_draft(self) -> EngineOptions:
        if (self.speculative == "draft") != (self.draft_model_path is not None):
            raise ValueError("--speculative draft needs --draft-model-path, and --draft-model-path needs it")
        return self


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLAMAFLEET_ENGINE_", env_nested_delimiter="__")

    log_level: str = Field(default="INFO", description="Log level")
    engine: EngineOptions = EngineOptions()


def parse_parts(texts: list[str]) -> tuple[RemotePart, ...]:
    try:
        return tuple(RemotePart.parse(text) for text in texts)
    except InvalidRequest as exc:
        raise SystemExit(f"--rpc-parts: {exc.message}") from None


def parse_request_defaults(text: str) -> RequestDefaults:
    try:
        return RequestDefaults.model_validate_json(text) if text else RequestDefaults()
    except ValueError as exc:
        first = str(exc).splitlines()
        raise SystemExit(f"--request-defaults: {' '.join(first[:3])}") from None


def read_chat_template(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SystemExit(f"--chat-template-file: cannot read {path}: {exc.strerror}") from None
    error = template_error(text)
    if error:
        raise SystemExit(f"--chat-template-file: {error}")
    return text


def parse_adapter(text: str) -> AdapterSpec:
    """NAME=PATH[@SCALE] → AdapterSpec."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"--adapters expects NAME=PATH[@SCALE], got {text!r}")
    path, _, scale = rest.rpartition("@") if "@" in rest else (rest, "", "")
    try:
        return AdapterSpec(name, path, float(scale) if scale else 1.0)
    except ValueError:
        raise SystemExit(f"--adapters: the scale in {text!r} is not a number") from None


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGTERM us when our parent dies, so a killed agent leaves no orphans."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if parent_pid and os.getppid() != parent_pid:
        raise SystemExit("parent agent is already gone")


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("parent agent %d is gone; shutting down", parent_pid)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):  # a stop ends the watch at once (the engine exits sooner)
            await asyncio.wait_for(stop.wait(), 1)


def thread_count(options: EngineOptions) -> int:
    """The threads to start with: as given, else what this process may use (never llama.cpp's 4)."""
    if options.n_threads:
        return options.n_threads
    cpus = detect_cpus()
    log.info("--n-threads 0: %d thread(s), the CPUs this process may use: %s", cpus.usable, cpus.describe())
    return cpus.usable


async def serve(options: EngineOptions) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    params = EngineParams(
        model_name=options.model_name,
        native=NativeConfig(
            model_path=options.model_path,
            n_ctx_per_seq=options.context_length,
            n_seq=options.parallel_slots,
            n_batch=options.batch_size,
            n_ubatch=min(options.ubatch_size, options.batch_size),
            n_gpu_layers=options.n_gpu_layers,
            n_threads=thread_count(options),
            embeddings=options.embeddings,
            pooling=options.pooling,
            remote_parts=parse_parts(options.rpc_parts),
            cpu_repack=options.cpu_repack,
        ),
        batcher=BatcherSettings(
            slots=options.parallel_slots,
            queue_limit=options.queue_limit,
            prefill_chunk=min(options.prefill_chunk, options.batch_size),
            speculative=options.speculative,
            draft_max=options.draft_max,
            draft_min=options.draft_min,
            cache_ram_bytes=options.cache_ram << 20,
        ),
        draft_path=options.draft_model_path,
        draft_p_min=options.draft_p_min,
        adapters=tuple(parse_adapter(a) for a in options.adapters),
        request_defaults=parse_request_defaults(options.request_defaults),
        chat_template=read_chat_template(options.chat_template_file),
        decode_timeout_s=options.decode_timeout_s or (30.0 if options.rpc_parts else 0.0),
    )
    if options.rpc_parts:
        os.environ.setdefault("GGML_NO_BACKTRACE", "1")  # a lost worker aborts us: no debugger attach
    metrics = EngineMetrics()
    core = BatchingCore(params, metrics)
    # The replica secret comes in the environment (the command line is visible to every user).
    secret = os.environ.pop(ENGINE_SECRET_ENV, "")
    if not secret and options.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("no replica secret (%s): anyone who reaches %s:%d can use this engine",
                    ENGINE_SECRET_ENV, options.host, options.port)  # fmt: skip
    tracing.configure("llamafleet-engine", {"llamafleet.model": options.model_name})
    app = create_app(core, options.model_name, metrics, options.max_body_bytes, secret, options.adapter_dirs)
    exit_code = 0

    async def load() -> None:
        nonlocal exit_code
        try:
            await core.load()
            log.info("serving %s on http://%s:%d", options.model_name, options.host, options.port)
        except Exception as exc:
            log.error("could not load %s: %s", options.model_path, exc)
            exit_code = EXIT_LOAD_FAILED
            stop.set()

    try:
        async with asyncio.TaskGroup() as group:
            loading = group.create_task(load(), name="load")
            if options.parent_pid:
                group.create_task(_watch_parent(options.parent_pid, stop), name="parent-watch")
            listening = socket.socket(fileno=options.listen_fd) if options.listen_fd >= 0 else None
            await serve_until(app, options.host, options.port, stop, options.shutdown_grace_s, listening)
            stop.set()
            loading.cancel()
    except* OSError as failed:  # the port: said in one line, no traceback
        log.error("%s", failed.exceptions[0])
        exit_code = EXIT_NO_PORT
    await core.close()
    return exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodeagent.engine", description=__doc__)
    add_settings_arguments(parser, EngineSettings)
    settings = settings_from_args(EngineSettings, parser.parse_args(argv))
    logs.configure(settings.log_level, component="engine")
    if settings.engine.parent_pid:
        _die_with_parent(settings.engine.parent_pid)
    # The batcher thread needs the GIL for a moment after every llama_decode; with the default 5 ms
    # switch interval it can wait that long behind the HTTP loop, which costs decode throughput.
    sys.setswitchinterval(0.0002)
    return run(serve(settings.engine))


if __name__ == "__main__":
    sys.exit(main())
